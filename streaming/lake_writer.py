"""The Iceberg writer: closed candles and backfill pages from Kafka into ``market.ohlc``.

Exactly once: each commit appends a batch *and* records the Kafka offsets it
covers in the table's properties, in one Iceberg transaction (one atomic
metadata swap). On start the writer seeks to the offsets in the table, so a
crash at any point — before, during or after a commit — neither loses nor
repeats a row. Rows already in the lake (a live candle, then a backfill of
the same minute) are not written again.

Batches are bounded by rows (``writer.batch_rows``) and by time
(``writer.batch_ms``); a backfill's end marker commits at once, then
:class:`HistoryReady` goes out on the relay fanout on ``HISTORY_READY:{id}``.

Every ``lake.maintenance_interval_s`` the writer also compacts small files and
expires old snapshots (:mod:`streaming.lake_maintenance`), taking turns with
its own commits.

Kafka is outside input: every candle and backfill row is validated
(:mod:`dexorder.market_validation`) before it joins a batch, and a batch is
cleared of non-finite values once more just before it is appended, so no lake
row ever holds NaN or infinity. Dropped rows are counted by reason
(``lake_invalid_rows_total``, ``invalid`` in ``/healthz``). A partition whose
offset in the lake lies beyond its log end belongs to a topic created again
(the embedded broker restarted): it is read from its beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import structlog
import zmq
import zmq.asyncio
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, In, LessThanOrEqual
from pyiceberg.table import Table

from dexorder import kafka
from dexorder.health import PartCounters
from dexorder.lake.query import get_candles, ms_to_iso
from dexorder.lake.table import OFFSETS_PROPERTY, ohlc_table, open_catalog
from dexorder.market_validation import DEFAULT_MAX_SKEW_MS, candle_problem, ohlc_row_problem
from dexorder.relay_keys import RelayPublisher, connect_publisher, publisher
from dexorder.schemas import (
    BackfillDone,
    Candle,
    HistoryReady,
    InvalidMessage,
    OhlcBatch,
    decode,
    encode,
)
from dexorder.topics import MARKET_CANDLES, MARKET_OHLC_BACKFILL, history_ready_topic
from streaming.lake_maintenance import MaintenancePolicy, maintain
from streaming.lake_rows import Key, PendingBatch, drop_keys, drop_non_finite
from streaming.offsets import rewind_recreated

if TYPE_CHECKING:
    from dexorder.config import Settings

RECORDS = Counter("lake_records_total", "Kafka records read")
ROWS = Counter("lake_rows_written_total", "Rows appended to market.ohlc")
COMMITS = Counter("lake_commits_total", "Batches committed to market.ohlc")
HISTORY_READY = Counter("lake_history_ready_total", "HISTORY_READY notices published")
MAINTENANCE_RUNS = Counter("lake_maintenance_runs_total", "Scheduled maintenance rounds done")
SKIPPED = Counter("lake_rows_already_present_total", "Rows not written: already in the lake")
MALFORMED = Counter("lake_malformed_records_total", "Kafka records that did not decode")
INVALID = Counter(
    "lake_invalid_rows_total",
    "Candles and backfill rows not written: failed validation",
    ["source", "reason"],
)
RESETS = Counter(
    "lake_offset_resets_total",
    "Partitions read again from the beginning: the topic was created again",
    ["topic"],
)

log = structlog.get_logger(part="lake-writer")


def committed_offsets(table: Table) -> dict[str, int]:
    """The Kafka offsets (``topic:partition`` → next offset) the lake already holds."""
    raw = table.properties.get(OFFSETS_PROPERTY)
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


def _existing(table: Table, rows: pa.Table) -> set[Key]:
    """Keys of ``rows`` the lake already has.

    One pushed-down scan per (timeframe, source): live candles of many tickers
    share one minute, so they are checked together; a backfill page is one
    ticker over its own range.
    """
    out: set[Key] = set()
    ms = pc.cast(rows["open_time"], pa.int64()).to_numpy() // 1000
    groups: dict[tuple[str, str], tuple[set[str], list[int]]] = {}
    for ticker, tf, source, t in zip(
        rows["ticker"].to_pylist(),
        rows["timeframe"].to_pylist(),
        rows["source"].to_pylist(),
        ms,
        strict=True,
    ):
        tickers, times = groups.setdefault((tf, source), (set(), []))
        tickers.add(ticker)
        times.append(int(t))
    for (tf, _), (tickers, times) in groups.items():
        found = table.scan(
            row_filter=And(
                In(term="ticker", literals=tickers),
                EqualTo(term="timeframe", value=tf),
                GreaterThanOrEqual(term="open_time", value=ms_to_iso(min(times))),
                LessThanOrEqual(term="open_time", value=ms_to_iso(max(times))),
            ),
            selected_fields=("ticker", "open_time"),
        ).to_arrow()
        if found.num_rows:
            found_ms = pc.cast(found["open_time"], pa.int64()).to_numpy() // 1000
            for ticker, t in zip(found["ticker"].to_pylist(), found_ms, strict=True):
                out.add((ticker, tf, int(t)))
    return out


def commit_batch(table: Table, batch: PendingBatch) -> int:
    """Append the batch's new rows and its offsets atomically; return rows written."""
    for attempt in range(5):
        table.refresh()
        rows, non_finite = drop_non_finite(batch.to_arrow())
        if non_finite:  # validated when read; this is the last line of defence
            INVALID.labels("batch", "not_finite").inc(non_finite)
            log.error("non-finite rows reached a batch; not written", rows=non_finite)
        fresh = drop_keys(rows, _existing(table, rows)) if rows.num_rows else rows
        offsets = {**committed_offsets(table), **batch.offsets}
        try:
            with table.transaction() as tx:
                if fresh.num_rows:
                    tx.append(fresh)
                tx.set_properties({OFFSETS_PROPERTY: json.dumps(offsets, sort_keys=True)})
        except CommitFailedException:
            if attempt == 4:
                raise
            continue  # someone else committed (compaction): reload and redo
        SKIPPED.inc(rows.num_rows - fresh.num_rows)
        ROWS.inc(fresh.num_rows)
        return int(fresh.num_rows)
    raise AssertionError("unreachable")


def history_ready(table: Table, done: BackfillDone) -> HistoryReady:
    """The answer to a finished backfill: what the lake now has of its range."""
    ready = HistoryReady(
        request_id=done.request_id,
        ticker=done.ticker,
        timeframe=done.timeframe,
        start=done.start,
        end=done.end,
        gaps=done.gaps,
        error=done.error,
    )
    if done.error is None:
        ready.rows = get_candles(table, done.ticker, done.timeframe, done.start, done.end).num_rows
    return ready


@dataclass
class LakeWriter:
    """Runs until :meth:`stop`."""

    bootstrap: kafka.Bootstrap
    relay_xsub: RelayPublisher | str  # the part's CURVE keys (a bare address: no relay)
    open_table: Callable[[], Table]
    group_id: str = "dexorder-lake-writer"
    batch_rows: int = 100_000
    batch_ms: int = 1_000
    #: scheduled compaction and snapshot expiry; None: never
    maintenance: MaintenancePolicy | None = None
    #: how far beyond the wall clock a candle's open time may be
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    #: figures for ``/healthz``, counted from construction
    counters: PartCounters = field(
        default_factory=lambda: PartCounters(
            {
                "records": RECORDS,
                "rows_written": ROWS,
                "commits": COMMITS,
                "malformed": MALFORMED,
                "invalid": INVALID,
                "history_ready": HISTORY_READY,
                "maintenance_runs": MAINTENANCE_RUNS,
                "offset_resets": RESETS,
            }
        )
    )
    #: rows dropped by the validation rules, by "source:reason"
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: held by commits and by each maintenance step, so they never conflict in-process
    _table_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, cfg: Settings) -> LakeWriter:
        """The writer of the ``writer`` section into the ``lake`` section's table,
        publishing with the part's relay keys."""
        w = cfg.writer
        return cls(
            bootstrap=cfg.kafka.connection(),
            relay_xsub=publisher(cfg, "lake-writer"),
            open_table=lambda: ohlc_table(open_catalog(cfg), cfg.lake.namespace),
            group_id=w.group_id,
            batch_rows=w.batch_rows,
            batch_ms=w.batch_ms,
            max_skew_ms=cfg.market_data.max_clock_skew_ms,
            maintenance=MaintenancePolicy.from_section(cfg.lake),
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        table = await asyncio.to_thread(self.open_table)
        maintenance = (
            asyncio.create_task(self._maintain_forever(self.maintenance))
            if self.maintenance and self.maintenance.interval_s > 0
            else None
        )
        try:
            await self._consume(table)
        finally:
            if maintenance:
                maintenance.cancel()

    async def _maintain_forever(self, policy: MaintenancePolicy) -> None:
        table = await asyncio.to_thread(self.open_table)  # its own handle: runs in a thread
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), policy.interval_s)
                return
            try:
                await asyncio.to_thread(maintain, table, policy, lambda: self._table_lock)
                MAINTENANCE_RUNS.inc()
            except Exception:  # maintenance must never stop the writer; next round retries
                log.exception("lake maintenance failed")

    async def _consume(self, table: Table) -> None:
        start_offsets = committed_offsets(table)
        consumer = kafka.consumer(
            self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=10_000,
            fetch_max_wait_ms=20,
        )
        writer = self

        class Seek(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                pass  # uncommitted rows are simply read again by the next owner

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                for tp in assigned:
                    off = start_offsets.get(f"{tp.topic}:{tp.partition}")
                    if off is not None:
                        consumer.seek(tp, off)
                writer.ready = True

        consumer.subscribe([MARKET_CANDLES, MARKET_OHLC_BACKFILL], listener=Seek())
        await consumer.start()
        pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 1000)
        connect_publisher(pub, self.relay_xsub)
        pending = PendingBatch()
        try:
            while not self._stop.is_set():
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    for r in records:
                        self._take(pending, r.value or b"")
                    pending.offsets[f"{tp.topic}:{tp.partition}"] = records[-1].offset + 1
                    RECORDS.inc(len(records))
                    if not pending.first_at:
                        pending.first_at = time.monotonic()
                for r in await rewind_recreated(consumer, log, RESETS):
                    pending.offsets[f"{r.tp.topic}:{r.tp.partition}"] = r.start
                due = pending.first_at and (
                    len(pending) >= self.batch_rows
                    or pending.done
                    or time.monotonic() - pending.first_at >= self.batch_ms / 1000
                )
                if due:
                    await self._commit(table, pending, consumer, pub)
                    pending = PendingBatch()
            if not pending.empty:
                await self._commit(table, pending, consumer, pub)
        finally:
            self.ready = False
            pub.close()
            await consumer.stop()

    def _take(self, pending: PendingBatch, value: bytes) -> None:
        try:
            msg = decode(value)
        except InvalidMessage:
            MALFORMED.inc()
            return
        now = int(time.time() * 1000)
        if isinstance(msg, Candle) and msg.closed:
            problem = candle_problem(msg, now, self.max_skew_ms)
            if problem is None:
                pending.add_candle(msg)
            else:
                self._invalid("live", problem, 1, msg.ticker)
        elif isinstance(msg, OhlcBatch):
            good = []
            for row in msg.rows:
                problem = ohlc_row_problem(row, now, self.max_skew_ms)
                if problem is None:
                    good.append(row)
                else:
                    self._invalid("backfill", problem, 1, msg.ticker)
            if len(good) < len(msg.rows):
                msg = msgspec.structs.replace(msg, rows=good)
            pending.add_ohlc(msg)
        elif isinstance(msg, BackfillDone):
            pending.done.append(msg)

    def _invalid(self, source: str, reason: str, n: int, ticker: str) -> None:
        key = f"{source}:{reason}"
        self.invalid_reasons[key] = self.invalid_reasons.get(key, 0) + n
        INVALID.labels(source, reason).inc(n)
        log.warning("invalid row not written", source=source, reason=reason, ticker=ticker)

    def health(self) -> dict[str, object]:
        """``/healthz`` details: the counters and the rows dropped by reason."""
        return {**self.counters, "invalid_reasons": dict(self.invalid_reasons)}

    def _locked_commit(self, table: Table, pending: PendingBatch) -> int:
        with self._table_lock:
            return commit_batch(table, pending)

    async def _commit(
        self, table: Table, pending: PendingBatch, consumer: AIOKafkaConsumer, pub: Any
    ) -> None:
        await asyncio.to_thread(self._locked_commit, table, pending)
        COMMITS.inc()
        for done in pending.done:
            ready = await asyncio.to_thread(history_ready, table, done)
            await pub.send_multipart([history_ready_topic(done.request_id).encode(), encode(ready)])
            HISTORY_READY.inc()
            log.info(
                "history ready", request_id=done.request_id, rows=ready.rows, error=ready.error
            )
        commit = {}
        for key, off in pending.offsets.items():
            topic, partition = key.rsplit(":", 1)
            commit[TopicPartition(topic, int(partition))] = off
        try:
            await consumer.commit(commit)  # for lag monitoring; the lake holds the truth
        except Exception as exc:
            log.info("offset commit deferred", error=str(exc)[:200])


async def _main() -> None:
    from dexorder.config import load_config
    from dexorder.kafka import ensure_topics
    from dexorder.log import setup_logging
    from dexorder.process import run_part

    cfg = load_config()
    setup_logging("lake-writer", cfg.log_level)
    writer = LakeWriter.from_config(cfg)
    await ensure_topics(writer.bootstrap)
    await run_part(
        "lake-writer",
        cfg.writer.health_port,
        lambda: (writer.ready, writer.health()),
        writer.run,
        writer.stop,
        host=cfg.health_host,
    )


if __name__ == "__main__":
    from dexorder import process

    process.main(_main)
