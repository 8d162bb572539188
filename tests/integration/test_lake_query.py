"""Reading the lake: pruning to the files a query needs, conversions, derived timeframes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from pyiceberg.table import Table

from dexorder.config import Settings
from dexorder.lake.query import files_read, get_candles, lake_missing
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import OhlcBatch
from streaming.lake_rows import PendingBatch
from streaming.lake_writer import commit_batch

pytestmark = pytest.mark.integration

T0 = 1_704_067_200_000  # 2024-01-01
HOUR = 3_600_000
DAY = 24 * HOUR
TICKERS = ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT", "BINANCE:SOL/USDT"]


@pytest.fixture
def table(tmp_path: Path) -> Table:
    """Five days of 1h candles for three tickers, one commit per ticker."""
    table = ohlc_table(open_catalog(Settings(home=tmp_path / "home")))
    for i, ticker in enumerate(TICKERS):
        batch = PendingBatch()
        rows = [
            (T0 + h * HOUR, 100.0 + h, 101.0 + h, 99.0 + h, 100.5 + h, 1.0 + i, 10)
            for h in range(5 * 24)
        ]
        batch.add_ohlc(OhlcBatch(request_id="t", ticker=ticker, timeframe="1h", rows=rows))
        commit_batch(table, batch)
    return table


def test_a_query_opens_only_its_tickers_days(table: Table) -> None:
    assert len(table.inspect.data_files()) == 3 * 5
    files = files_read(table, "BINANCE:ETH/USDT", "1h", T0 + DAY, T0 + 3 * DAY)
    assert len(files) == 2
    assert all("ETH" in f for f in files)
    assert {f.split("open_day=")[1][:10] for f in files} == {"2024-01-02", "2024-01-03"}


def test_candles_come_sorted_and_convert_to_pandas_and_polars(table: Table) -> None:
    rows = get_candles(table, "BINANCE:SOL/USDT", "1h", T0 + 2 * HOUR, T0 + 5 * HOUR)
    assert rows.num_rows == 3
    frame = rows.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["open"]) == [102.0, 103.0, 104.0]
    assert str(frame["open_time"].dt.tz) == "UTC"
    polars_frame = pl.from_arrow(rows)
    assert isinstance(polars_frame, pl.DataFrame)
    assert polars_frame["volume"].to_list() == [3.0, 3.0, 3.0]


def test_a_timeframe_not_stored_is_folded_from_what_is(table: Table) -> None:
    # only 1h is stored here, and 4h is derived from 1m: none stored, so none derived
    assert get_candles(table, "BINANCE:BTC/USDT", "4h", T0, T0 + DAY).num_rows == 0


def test_missing_ranges_are_found(table: Table) -> None:
    assert lake_missing(table, "BINANCE:BTC/USDT", "1h", T0 - 2 * HOUR, T0 + HOUR) == [
        (T0 - 2 * HOUR, T0)
    ]
    assert lake_missing(table, "BINANCE:BTC/USDT", "1h", T0, T0 + 5 * DAY) == []
    assert lake_missing(table, "BINANCE:XRP/USDT", "1h", T0, T0 + 2 * HOUR) == [(T0, T0 + 2 * HOUR)]
