"""``dexorder lake``: look after the Iceberg lake (status, compaction, snapshot expiry).

Safe while the platform runs: each step retries when the writer commits first.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table as RichTable

from dexorder.lake.table import ohlc_table, open_catalog
from launcher.console import config_or_exit, console, err
from launcher.history import iso
from streaming.lake_maintenance import compact, expire, now_ms, partitions

app = typer.Typer(help="Look after the lake of market history.", no_args_is_help=True)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` → milliseconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 30m, 24h or 7d")
    return int(float(m.group(1)) * _UNIT_MS[m.group(2)])


@app.command()
def status(
    top: Annotated[int, typer.Option(min=1, help="Partitions listed, most files first")] = 10,
) -> None:
    """Snapshots, files and the partitions with the most files."""
    cfg = config_or_exit()
    table = ohlc_table(open_catalog(cfg), cfg.lake.namespace)
    parts = partitions(table)
    snaps = table.snapshots()
    files = sum(p.files for p in parts)
    rows = sum(p.rows for p in parts)
    console.print(
        f"market.ohlc: {rows:,} rows in {files:,} files over {len(parts):,} partitions; "
        f"{len(snaps):,} snapshots"
        + (f" since {iso(min(s.timestamp_ms for s in snaps))}" if snaps else "")
    )
    if not parts:
        return
    out = RichTable("day", "ticker", "files", "rows", "bytes", title="most files")
    for p in sorted(parts, key=lambda p: -p.files)[:top]:
        out.add_row(str(p.day), p.ticker, f"{p.files:,}", f"{p.rows:,}", f"{p.bytes:,}")
    console.print(out)


@app.command(name="compact")
def compact_cmd(
    min_files: Annotated[
        int | None,
        typer.Option(min=2, help="Rewrite partitions with at least this many files"),
    ] = None,
) -> None:
    """Rewrite each partition's small files into one (default: lake.compact_min_files)."""
    cfg = config_or_exit()
    table = ohlc_table(open_catalog(cfg), cfg.lake.namespace)
    with Progress(
        TextColumn("compacting"), BarColumn(), TaskProgressColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("", total=None)
        report = compact(
            table,
            min_files or cfg.lake.compact_min_files,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if report.partitions == 0:
        console.print("nothing to compact")
        return
    console.print(
        f"compacted {report.partitions:,} partitions: {report.files_before:,} files "
        f"→ {report.files_after:,} ({report.rows:,} rows)"
    )


@app.command(name="expire")
def expire_cmd(
    older_than: Annotated[
        str | None,
        typer.Option(help="Expire snapshots older than this, e.g. 24h or 7d"),
    ] = None,
    keep_last: Annotated[
        int | None, typer.Option(min=1, help="Always keep this many newest snapshots")
    ] = None,
) -> None:
    """Expire old snapshots and delete the files only they used (default: lake config)."""
    cfg = config_or_exit()
    try:
        age = (
            parse_duration(older_than)
            if older_than
            else int(cfg.lake.snapshot_retention_hours * 3_600_000)
        )
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    table = ohlc_table(open_catalog(cfg), cfg.lake.namespace)
    report = expire(table, now_ms() - age, keep_last or cfg.lake.keep_snapshots)
    console.print(
        f"expired {report.snapshots_expired:,} snapshots, kept {report.snapshots_kept:,}, "
        f"deleted {report.files_deleted:,} files"
    )
