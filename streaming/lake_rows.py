"""Rows for the lake: candles and backfill pages into one Arrow batch. No I/O.

A batch keeps the first row of each (ticker, timeframe, open_time), so a
candle that arrives twice within a batch is written once; rows already in
the lake are removed by the writer before it appends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from dexorder.lake.table import ARROW_SCHEMA
from dexorder.markets import Ticker
from dexorder.schemas import BackfillDone, Candle, OhlcBatch

Key = tuple[str, str, int]


@dataclass
class PendingBatch:
    """Rows and end markers read from Kafka but not yet committed to the lake."""

    rows: dict[Key, tuple[str, float, float, float, float, float, int, str]] = field(
        default_factory=dict
    )
    #: next offset per "topic:partition" once this batch is committed
    offsets: dict[str, int] = field(default_factory=dict)
    done: list[BackfillDone] = field(default_factory=list)
    first_at: float = 0.0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.rows and not self.done and not self.offsets

    def add_candle(self, c: Candle) -> None:
        key = (c.ticker, c.timeframe, c.open_time)
        self.rows.setdefault(
            key, (c.exchange, c.open, c.high, c.low, c.close, c.volume, c.trades, "live")
        )

    def add_ohlc(self, batch: OhlcBatch) -> None:
        exchange = Ticker.parse(batch.ticker).exchange
        for t, o, h, low, c, v, n in batch.rows:
            self.rows.setdefault(
                (batch.ticker, batch.timeframe, t), (exchange, o, h, low, c, v, n, "backfill")
            )

    def to_arrow(self) -> pa.Table:
        keys = list(self.rows)
        vals = list(self.rows.values())
        return pa.table(
            {
                "exchange": [v[0] for v in vals],
                "ticker": [k[0] for k in keys],
                "timeframe": [k[1] for k in keys],
                "open_time": pa.array([k[2] * 1000 for k in keys], pa.timestamp("us", tz="UTC")),
                "open": [v[1] for v in vals],
                "high": [v[2] for v in vals],
                "low": [v[3] for v in vals],
                "close": [v[4] for v in vals],
                "volume": [v[5] for v in vals],
                "trades": [v[6] for v in vals],
                "source": [v[7] for v in vals],
            },
            schema=ARROW_SCHEMA,
        )


def drop_keys(rows: pa.Table, existing: set[Key]) -> pa.Table:
    """``rows`` without those whose (ticker, timeframe, open_time ms) is in ``existing``."""
    if not existing or rows.num_rows == 0:
        return rows
    ms = pc.cast(rows["open_time"], pa.int64()).to_numpy() // 1000
    tickers = rows["ticker"].to_pylist()
    tfs = rows["timeframe"].to_pylist()
    keep = [(tickers[i], tfs[i], int(ms[i])) not in existing for i in range(rows.num_rows)]
    return rows.filter(pa.array(keep))


_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")


def drop_non_finite(rows: pa.Table) -> tuple[pa.Table, int]:
    """``rows`` without any whose prices or volume are NaN or infinite; and how many went."""
    if rows.num_rows == 0:
        return rows, 0
    keep = pc.is_finite(rows[_VALUE_COLUMNS[0]])
    for c in _VALUE_COLUMNS[1:]:
        keep = pc.and_(keep, pc.is_finite(rows[c]))
    keep = pc.fill_null(keep, False)
    kept = rows.filter(keep)
    return kept, rows.num_rows - kept.num_rows
