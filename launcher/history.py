"""``dexorder history``: backfill what the lake lacks, then print or save the candles."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dexorder.client import backfill
from dexorder.config import Settings
from dexorder.lake.query import get_candles
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import HistoryReady
from dexorder.times import iso, parse_when

__all__ = ["OUTPUT_FORMATS", "iso", "parse_when", "read", "render", "run_backfill", "write"]

OUTPUT_FORMATS = (".csv", ".parquet")


def run_backfill(
    cfg: Settings, ticker: str, tf: str, start: int, end: int, console: Console
) -> HistoryReady:
    """Backfill with a progress bar on ``console``."""
    with Progress(
        TextColumn("backfilling {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{ticker} {tf}", total=None, detail="checking the lake")

        def progress(fetched: int, total: int) -> None:
            detail = f"{fetched:,}/{total:,} candles" if total else "already in the lake"
            bar.update(task, completed=fetched, total=max(total, 1), detail=detail)

        return asyncio.run(backfill(ticker, tf, start, end, config=cfg, on_progress=progress))


def read(cfg: Settings, ticker: str, tf: str, start: int, end: int, as_of: int | None) -> pa.Table:
    table = ohlc_table(open_catalog(cfg), cfg.lake.namespace)
    return get_candles(table, ticker, tf, start, end, as_of_ms=as_of)


def write(rows: pa.Table, out: Path) -> None:
    if out.suffix == ".csv":
        pacsv.write_csv(rows, out)
    elif out.suffix == ".parquet":
        pq.write_table(rows, out)
    else:
        raise ValueError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}")


def render(rows: pa.Table, title: str, limit: int) -> Table:
    table = Table(
        "open time (UTC)",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "source",
        title=f"{title}: {rows.num_rows:,} candles",
    )
    data = rows.to_pylist()
    shown = data if len(data) <= limit else [*data[: limit // 2], None, *data[-limit // 2 :]]
    for r in shown:
        if r is None:
            table.add_row("…", "", "", "", "", "", "")
            continue
        table.add_row(
            r["open_time"].strftime("%Y-%m-%d %H:%M"),
            f"{r['open']:.8g}",
            f"{r['high']:.8g}",
            f"{r['low']:.8g}",
            f"{r['close']:.8g}",
            f"{r['volume']:.6g}",
            r["source"],
        )
    return table
