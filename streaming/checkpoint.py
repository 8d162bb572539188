"""The stream runner's checkpoint: folding state plus the offsets it reflects.

Written atomically (temp file + rename) only after every closed candle the
state accounts for has been acknowledged by Kafka, so after a crash the runner
restores the state, re-reads ticks from ``tick_offsets``, and learns from
``market.candles`` (read from ``candle_offsets`` on) which closed candles it
had already emitted since.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from dexorder.topics import MARKET_TICKS

log = structlog.get_logger(part="stream")


class Checkpoint(msgspec.Struct):
    #: next offset to read, per ``market.ticks`` partition
    tick_offsets: dict[int, int] = {}
    #: end of ``market.candles`` per partition when the checkpoint was taken
    candle_offsets: dict[int, int] = {}
    #: :meth:`streaming.candles.CandleBook.snapshot` output
    book: bytes = b""
    #: :meth:`streaming.rules.RuleBook.snapshot` output (empty: no rules evaluated)
    rules: bytes = b""


def load(path: Path) -> Checkpoint | None:
    """Read the checkpoint at ``path``; None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return msgspec.msgpack.decode(data, type=Checkpoint)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` so that a crash leaves either the old or the new one."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.msgpack.encode(checkpoint))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: the rule state captured with a checkpoint, and the fired rules' writes it waits for
_Rules = tuple[bytes, list[asyncio.Future[None]]]


class _RecordMetadata(Protocol):
    """What the broker acknowledges for a sent record (aiokafka's ``RecordMetadata``)."""

    partition: int
    offset: int


@dataclass
class Checkpointer:
    """The stream runner's "acked → checkpoint → commit" cycle.

    The runner tells it which ``market.ticks`` offsets the state now reflects
    (:meth:`read_to`) and which closed candles it sent to ``market.candles``
    (:meth:`sent`); :meth:`take` then

    1. waits until Kafka acknowledged every closed candle the state no longer holds,
    2. writes the state and the offsets together, atomically (:func:`save`),
    3. commits the offsets to the consumer group (for lag monitoring, and for a
       runner started without its checkpoint folder).

    The state and the offsets are captured at once (no await in between), so they
    always match; the three steps after that wait for the broker and the disk. The
    periodic cycle (:meth:`maybe_take`) runs them in the background, one cycle at a
    time, so the runner keeps folding ticks meanwhile: waiting inline cost every
    tick behind it an ack round trip, an fsync and a commit round trip once a second
    (tens of ms on a busy machine), which was most of the realtime path's p99.
    """

    path: Path
    #: the folding state to snapshot (:meth:`streaming.candles.CandleBook.snapshot`)
    snapshot: Callable[[], bytes]
    #: how often :meth:`maybe_take` takes one
    interval_ms: int
    #: next offset to read, per ``market.ticks`` partition
    tick_offsets: dict[int, int] = field(default_factory=dict)
    #: end of ``market.candles`` per partition as of the last checkpoint
    candle_offsets: dict[int, int] = field(default_factory=dict)
    #: when the last one was taken (ms); the runner starts counting at its start
    last_ms: int = 0
    _pending: list[asyncio.Future[_RecordMetadata]] = field(default_factory=list)
    #: the rule state to snapshot with the book (:meth:`streaming.rules.RuleBook.snapshot`)
    rules_snapshot: Callable[[], bytes] | None = None
    #: fired rules' writes (:meth:`wrote`) not yet waited for
    _writes: list[asyncio.Future[None]] = field(default_factory=list)
    #: the cycle :meth:`maybe_take` started, while it runs (and until its outcome is seen)
    _running: asyncio.Task[None] | None = None

    def read_to(self, partition: int, next_offset: int) -> None:
        """The state now reflects ``market.ticks`` ``partition`` up to ``next_offset``."""
        self.tick_offsets[partition] = next_offset

    def sent(self, ack: asyncio.Future[_RecordMetadata]) -> None:
        """A closed candle was sent to ``market.candles``; ``ack`` resolves once stored."""
        self._pending.append(ack)

    def wrote(self, writes: list[asyncio.Task[None]]) -> None:
        """Fired rules' records are being written; the next checkpoint, which no longer
        holds those rules, is saved only once they are stored."""
        self._writes += writes

    async def maybe_take(self, consumer: AIOKafkaConsumer, now_ms: int) -> None:
        """Start a cycle in the background when the last one is ``interval_ms`` old and
        none is under way; a failure of the previous one is raised here."""
        if self._running is not None:
            if not self._running.done():
                return  # still waiting for acks or the disk: the next call tries again
            running, self._running = self._running, None
            running.result()
        if self.tick_offsets and now_ms - self.last_ms >= self.interval_ms:
            self.last_ms = now_ms
            self._running = asyncio.create_task(self._finish(*self._capture(), consumer))

    async def take(self, consumer: AIOKafkaConsumer) -> None:
        """One cycle, waited for (on shutdown and on a rebalance), after the one under
        way if any; nothing when no tick has been read yet."""
        if self._running is not None:
            running, self._running = self._running, None
            await running
        if not self.tick_offsets:
            return
        await self._finish(*self._capture(), consumer)

    def _capture(
        self,
    ) -> tuple[dict[int, int], bytes, list[asyncio.Future[_RecordMetadata]], _Rules]:
        """The offsets, the state and the closed candles sent so far, at one instant (and
        the rules' state with the fired rules' writes)."""
        pending, self._pending = self._pending, []
        writes, self._writes = self._writes, []
        rules = self.rules_snapshot() if self.rules_snapshot is not None else b""
        return dict(self.tick_offsets), self.snapshot(), pending, (rules, writes)

    async def _finish(
        self,
        tick_offsets: dict[int, int],
        book: bytes,
        pending: list[asyncio.Future[_RecordMetadata]],
        rules: _Rules,
        consumer: AIOKafkaConsumer,
    ) -> None:
        """Steps 1-3 for a captured state: acks, the file (fsync off the loop), the commit."""
        rule_state, writes = rules
        await asyncio.gather(*writes)
        acked: dict[int, int] = {}
        for meta in await asyncio.gather(*pending):
            acked[meta.partition] = max(acked.get(meta.partition, 0), meta.offset + 1)
        # replaced, not maxed with the old end: a topic created again starts from 0
        self.candle_offsets.update(acked)
        checkpoint = Checkpoint(
            tick_offsets=tick_offsets,
            candle_offsets=dict(self.candle_offsets),
            book=book,
            rules=rule_state,
        )
        await asyncio.to_thread(save, self.path, checkpoint)
        commit = {TopicPartition(MARKET_TICKS, p): o for p, o in tick_offsets.items()}
        try:
            await consumer.commit(commit)
        except Exception as exc:  # a rebalance in progress; the checkpoint already holds them
            log.info("offset commit deferred", error=str(exc)[:200])
