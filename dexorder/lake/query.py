"""Reading candles from the lake: :func:`get_candles` and :func:`lake_missing`.

Reads push the ticker, timeframe and time range down to Iceberg, so only the
files of that ticker's days are opened. A timeframe with no stored rows in
the range is derived from the 1m candles on the fly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from dexorder.lake.ranges import missing_ranges, resample
from dexorder.markets import Ticker, Timeframe


def ms_to_iso(ms: int) -> str:
    """An ISO 8601 UTC timestamp of epoch milliseconds (for Iceberg filters)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def candle_filter(ticker: str, timeframe: str, start: int, end: int) -> BooleanExpression:
    """The Iceberg row filter of one ticker's candles with ``start <= open_time < end``."""
    return And(
        EqualTo(term="ticker", value=ticker),
        EqualTo(term="timeframe", value=timeframe),
        GreaterThanOrEqual(term="open_time", value=ms_to_iso(start)),
        LessThan(term="open_time", value=ms_to_iso(end)),
    )


def _scan(
    table: Table,
    ticker: str,
    timeframe: str,
    start: int,
    end: int,
    snapshot_id: int | None,
    fields: tuple[str, ...] = ("*",),
) -> pa.Table:
    rows = table.scan(
        row_filter=candle_filter(ticker, timeframe, start, end),
        selected_fields=fields,
        snapshot_id=snapshot_id,
    ).to_arrow()
    return rows.sort_by("open_time") if rows.num_rows else rows


def snapshot_as_of(table: Table, as_of_ms: int | None) -> int | None:
    """The id of the snapshot current at ``as_of_ms`` (None: the latest)."""
    if as_of_ms is None:
        return None
    snap = table.snapshot_as_of_timestamp(as_of_ms)
    if snap is None:
        raise ValueError(f"the lake has no snapshot as of {ms_to_iso(as_of_ms)}")
    return snap.snapshot_id


def get_candles(
    table: Table, ticker: str, timeframe: str, start: int, end: int, as_of_ms: int | None = None
) -> pa.Table:
    """Candles of ``ticker`` with ``start <= open_time < end`` (ms), sorted, as Arrow.

    ``as_of_ms`` reads the lake as it was then (time travel). Convert with
    ``.to_pandas()`` or ``polars.from_arrow(...)``.
    """
    t, tf = str(Ticker.parse(ticker)), Timeframe.parse(timeframe)
    snapshot_id = snapshot_as_of(table, as_of_ms)
    rows = _scan(table, t, tf.value, start, end, snapshot_id)
    if rows.num_rows or tf is Timeframe.M1:
        return rows
    aligned = start - start % tf.ms
    minutes = _scan(table, t, Timeframe.M1.value, aligned, end, snapshot_id)
    return resample(minutes, tf.ms, tf.value)


def files_read(table: Table, ticker: str, timeframe: str, start: int, end: int) -> list[str]:
    """The data files a :func:`get_candles` of this range opens (after pruning)."""
    t, tf = str(Ticker.parse(ticker)), Timeframe.parse(timeframe)
    tasks = table.scan(row_filter=candle_filter(t, tf.value, start, end)).plan_files()
    return sorted(task.file.file_path for task in tasks)


def lake_missing(
    table: Table, ticker: str, timeframe: str, start: int, end: int
) -> list[tuple[int, int]]:
    """The ranges of ``[start, end)`` for which the lake has no candle of ``timeframe``."""
    tf = Timeframe.parse(timeframe)
    have = _scan(
        table, str(Ticker.parse(ticker)), tf.value, start - start % tf.ms, end, None, ("open_time",)
    )
    times = (pc.cast(have["open_time"], pa.int64()).to_numpy() // 1000) if have.num_rows else []
    return missing_ranges(times, start, end, tf.ms)
