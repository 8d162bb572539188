"""Candles from the lake, backfilled through the platform when missing (agent and gateway)."""

from __future__ import annotations

import asyncio

import pandas as pd

from dexorder.client import backfill
from dexorder.config import Settings
from dexorder.lake.query import get_candles, lake_missing
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.markets import Ticker, Timeframe
from dexorder.times import iso

#: Most candles one request may load (a year of 1m candles and some).
MAX_CANDLES = 600_000


class MarketDataError(ValueError):
    """Candles that cannot be had; the message says why."""


def _frame(rows: object) -> pd.DataFrame:
    frame = rows.to_pandas()  # type: ignore[attr-defined]
    frame = frame.set_index("open_time")[["open", "high", "low", "close", "volume"]]
    frame.index.name = "open_time"
    return frame


async def load_candles(
    cfg: Settings,
    ticker: str,
    timeframe: str,
    start: int,
    end: int,
    backfill_timeout_s: float = 120,
) -> pd.DataFrame:
    """Candles of ``[start, end)`` as a DataFrame indexed by open time (UTC)."""
    t, tf = str(Ticker.parse(ticker)), Timeframe.parse(timeframe)
    if end <= start:
        raise MarketDataError("start must be before end")
    if (end - start) // tf.ms > MAX_CANDLES:
        raise MarketDataError(
            f"{(end - start) // tf.ms:,} candles asked for; at most {MAX_CANDLES:,} at once "
            "(use a longer timeframe or a shorter range)"
        )
    table = await asyncio.to_thread(lambda: ohlc_table(open_catalog(cfg), cfg.lake.namespace))
    missing = await asyncio.to_thread(lake_missing, table, t, tf.value, start, end)
    if missing:
        ready = await backfill(t, tf.value, start, end, config=cfg, timeout_s=backfill_timeout_s)
        if ready.error:
            raise MarketDataError(
                f"the lake lacks {t} {tf.value} candles from {iso(missing[0][0])} and fetching "
                f"them failed: {ready.error}"
            )
        table.refresh()
    rows = await asyncio.to_thread(get_candles, table, t, tf.value, start, end)
    if rows.num_rows == 0:
        raise MarketDataError(f"no {t} {tf.value} candles between {iso(start)} and {iso(end)}")
    return _frame(rows)
