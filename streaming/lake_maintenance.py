"""Lake maintenance: compaction of small files and expiry of old snapshots.

The live writer appends a few rows per ticker every minute, so each
(day, ticker) partition collects a file per commit. :func:`compact` rewrites
every partition that has ``min_files`` or more into one sorted file, one
Iceberg transaction per partition (a concurrent reader sees the old files or
the new one, never both or neither). :func:`expire` drops snapshots older than
the retention (keeping the newest few for time travel) and deletes the files
that only those snapshots referenced.

Both retry on a commit conflict with the writer (optimistic concurrency: the
catalog refuses a commit based on stale metadata), so they are safe to run
while the platform writes. :func:`plan_compaction` is the pure part.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from dexorder.lake.query import ms_to_iso

if TYPE_CHECKING:
    from dexorder.config import LakeConfig

COMPACTED = Counter("lake_partitions_compacted_total", "Partitions rewritten into one file")
EXPIRED = Counter("lake_snapshots_expired_total", "Snapshots expired")
DELETED = Counter("lake_files_deleted_total", "Files deleted after snapshot expiry")

DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
_RETRIES = 8

log = structlog.get_logger(part="lake-maintenance")


@dataclass(frozen=True, order=True)
class Partition:
    """One ``(day, ticker)`` partition of ``market.ohlc`` and its data files."""

    day: date
    ticker: str
    files: int = 0
    rows: int = 0
    bytes: int = 0

    @property
    def start_ms(self) -> int:
        return (self.day - _EPOCH).days * DAY_MS

    def row_filter(self) -> BooleanExpression:
        """Selects exactly this partition's rows (so whole files are replaced)."""
        return And(
            EqualTo(term="ticker", value=self.ticker),
            And(
                GreaterThanOrEqual(term="open_time", value=ms_to_iso(self.start_ms)),
                LessThan(term="open_time", value=ms_to_iso(self.start_ms + DAY_MS)),
            ),
        )


def partitions(table: Table) -> list[Partition]:
    """Every partition of the current snapshot with its file count, rows and bytes."""
    files = table.inspect.data_files().select(["partition", "record_count", "file_size_in_bytes"])
    totals: dict[tuple[date, str], list[int]] = {}
    for row in files.to_pylist():
        key = (row["partition"]["open_day"], row["partition"]["ticker"])
        t = totals.setdefault(key, [0, 0, 0])
        t[0] += 1
        t[1] += row["record_count"]
        t[2] += row["file_size_in_bytes"]
    return sorted(Partition(d, tk, *t) for (d, tk), t in totals.items())


def plan_compaction(parts: Iterable[Partition], min_files: int) -> list[Partition]:
    """The partitions worth rewriting: those with at least ``min_files`` files."""
    return [p for p in parts if p.files >= max(min_files, 2)]


@dataclass
class CompactionReport:
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    conflicts: int = 0


def compact_partition(table: Table, part: Partition) -> tuple[int, int]:
    """Rewrite one partition into one sorted file; return (rows, commit conflicts)."""
    for attempt in range(_RETRIES):
        table.refresh()
        rows = table.scan(row_filter=part.row_filter()).to_arrow()
        if rows.num_rows == 0:
            return 0, attempt
        rows = rows.sort_by([("timeframe", "ascending"), ("open_time", "ascending")])
        try:
            with table.transaction() as tx:
                tx.overwrite(rows, overwrite_filter=part.row_filter())
        except (CommitFailedException, ValidationException):
            # the writer added to this partition meanwhile: wait a little (with jitter, so
            # that the next try does not meet the writer's next commit again), read, redo
            time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
            continue
        return rows.num_rows, attempt
    raise CommitFailedException(f"compaction of {part.ticker} {part.day} kept conflicting")


def compact(
    table: Table,
    min_files: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    lock: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> CompactionReport:
    """Compact every partition with ``min_files`` or more files.

    ``on_progress(done, total)`` is told after each partition; ``lock()`` is
    held around each partition's rewrite (the writer shares it in-process).
    """
    table.refresh()
    todo = plan_compaction(partitions(table), min_files)
    report = CompactionReport(partitions=len(todo), files_before=sum(p.files for p in todo))
    for i, part in enumerate(todo):
        with lock():
            n, conflicts = compact_partition(table, part)
        report.rows += n
        report.conflicts += conflicts
        report.files_after += 1 if n else 0
        COMPACTED.inc()
        if on_progress:
            on_progress(i + 1, len(todo))
    if todo:
        log.info("compacted", **report.__dict__)
    return report


@dataclass
class ExpiryReport:
    snapshots_expired: int = 0
    snapshots_kept: int = 0
    files_deleted: int = 0
    deleted: list[str] = field(default_factory=list, repr=False)


def _referenced(table: Table) -> set[str]:
    """Every data file, manifest and manifest list any snapshot of ``table`` refers to."""
    io = table.io
    out: set[str] = set()
    seen_manifests: set[str] = set()
    for snap in table.snapshots():
        out.add(snap.manifest_list)
        for manifest in snap.manifests(io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            out.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                out.add(entry.data_file.file_path)
    return out


def expire(table: Table, older_than_ms: int, keep_last: int = 10) -> ExpiryReport:
    """Expire snapshots taken before ``older_than_ms`` except the newest ``keep_last``.

    Then delete the files only the expired snapshots referred to. The current
    snapshot is never expired.
    """
    for _ in range(_RETRIES):
        table.refresh()
        snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
        current = table.current_snapshot()
        keep = {s.snapshot_id for s in snaps[-keep_last:]} if keep_last > 0 else set()
        if current is not None:
            keep.add(current.snapshot_id)
        doomed = [
            s.snapshot_id
            for s in snaps
            if s.timestamp_ms < older_than_ms and s.snapshot_id not in keep
        ]
        if not doomed:
            return ExpiryReport(snapshots_kept=len(snaps))
        before = _referenced(table)
        try:
            table.maintenance.expire_snapshots().by_ids(doomed).commit()
        except CommitFailedException:
            continue
        break
    else:
        raise CommitFailedException("snapshot expiry kept conflicting with other commits")
    table.refresh()
    unreferenced = sorted(before - _referenced(table))
    for path in unreferenced:
        table.io.delete(path)
    EXPIRED.inc(len(doomed))
    DELETED.inc(len(unreferenced))
    report = ExpiryReport(
        snapshots_expired=len(doomed),
        snapshots_kept=len(table.snapshots()),
        files_deleted=len(unreferenced),
        deleted=unreferenced,
    )
    log.info(
        "expired snapshots",
        expired=report.snapshots_expired,
        kept=report.snapshots_kept,
        files_deleted=report.files_deleted,
    )
    return report


def files_per_partition(table: Table) -> tuple[int, float, int]:
    """(partitions, mean files per partition, most files in one partition)."""
    parts = partitions(table)
    if not parts:
        return 0, 0.0, 0
    counts = [p.files for p in parts]
    return len(parts), sum(counts) / len(parts), max(counts)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class MaintenancePolicy:
    """What scheduled maintenance does (from the ``lake`` configuration section)."""

    interval_s: float = 600.0
    compact_min_files: int = 8
    snapshot_retention_ms: int = 3_600_000
    keep_snapshots: int = 10

    @classmethod
    def from_section(cls, lake: LakeConfig) -> MaintenancePolicy:
        """The policy the ``lake`` section sets."""
        return cls(
            interval_s=lake.maintenance_interval_s,
            compact_min_files=lake.compact_min_files,
            snapshot_retention_ms=int(lake.snapshot_retention_hours * 3_600_000),
            keep_snapshots=lake.keep_snapshots,
        )


def maintain(
    table: Table,
    policy: MaintenancePolicy,
    lock: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> tuple[CompactionReport, ExpiryReport]:
    """One round: compact, then expire snapshots past the retention."""
    compaction = compact(table, policy.compact_min_files, lock=lock)
    with lock():
        expiry = expire(table, now_ms() - policy.snapshot_retention_ms, policy.keep_snapshots)
    return compaction, expiry
