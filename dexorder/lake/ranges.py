"""Pure helpers over candle time grids: missing ranges and resampling. No I/O."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def missing_ranges(
    present: Iterable[int], start: int, end: int, step: int
) -> list[tuple[int, int]]:
    """The ``[a, b)`` ranges of candle open times in ``[start, end)`` not in ``present``.

    ``start`` is aligned down to the grid of ``step``; adjacent missing candles
    are merged into one range.
    """
    start -= start % step
    if end <= start:
        return []
    grid = np.arange(start, end, step, dtype=np.int64)
    have = np.fromiter(present, dtype=np.int64)
    lacking = grid[~np.isin(grid, have)]
    if len(lacking) == 0:
        return []
    breaks = np.flatnonzero(np.diff(lacking) != step) + 1
    runs = np.split(lacking, breaks)
    return [(int(r[0]), int(r[-1]) + step) for r in runs]


def resample(minutes: pa.Table, step_ms: int, timeframe: str) -> pa.Table:
    """Fold 1m rows (sorted by open_time, one ticker) into candles of ``step_ms``."""
    if minutes.num_rows == 0:
        return minutes
    ms = pc.cast(minutes["open_time"], pa.int64()).to_numpy() // 1000
    groups = ms - ms % step_ms
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(ms)]

    def col(name: str) -> np.ndarray:
        values: np.ndarray = minutes[name].to_numpy()
        return values

    out = {
        "exchange": minutes["exchange"].take(pa.array(starts)),
        "ticker": minutes["ticker"].take(pa.array(starts)),
        "timeframe": pa.array([timeframe] * len(starts), pa.string()),
        "open_time": pa.array(groups[starts] * 1000, pa.timestamp("us", tz="UTC")),
        "open": col("open")[starts],
        "high": np.maximum.reduceat(col("high"), starts),
        "low": np.minimum.reduceat(col("low"), starts),
        "close": col("close")[ends - 1],
        "volume": np.add.reduceat(col("volume"), starts),
        "trades": np.add.reduceat(col("trades"), starts),
        "source": pa.array(["derived:1m"] * len(starts), pa.string()),
    }
    return pa.table(out, schema=minutes.schema)
