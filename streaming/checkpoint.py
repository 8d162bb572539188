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

    def read_to(self, partition: int, next_offset: int) -> None:
        """The state now reflects ``market.ticks`` ``partition`` up to ``next_offset``."""
        self.tick_offsets[partition] = next_offset

    def sent(self, ack: asyncio.Future[_RecordMetadata]) -> None:
        """A closed candle was sent to ``market.candles``; ``ack`` resolves once stored."""
        self._pending.append(ack)

    async def maybe_take(self, consumer: AIOKafkaConsumer, now_ms: int) -> None:
        """:meth:`take` when the last one is ``interval_ms`` old."""
        if self.tick_offsets and now_ms - self.last_ms >= self.interval_ms:
            await self.take(consumer)
            self.last_ms = now_ms

    async def take(self, consumer: AIOKafkaConsumer) -> None:
        """One cycle; nothing when no tick has been read yet."""
        if not self.tick_offsets:
            return
        acked: dict[int, int] = {}
        for meta in await asyncio.gather(*self._pending):
            acked[meta.partition] = max(acked.get(meta.partition, 0), meta.offset + 1)
        # replaced, not maxed with the old end: a topic created again starts from 0
        self.candle_offsets.update(acked)
        self._pending.clear()
        save(
            self.path,
            Checkpoint(
                tick_offsets=dict(self.tick_offsets),
                candle_offsets=dict(self.candle_offsets),
                book=self.snapshot(),
            ),
        )
        commit = {TopicPartition(MARKET_TICKS, p): o for p, o in self.tick_offsets.items()}
        try:
            await consumer.commit(commit)
        except Exception as exc:  # a rebalance in progress; the checkpoint already holds them
            log.info("offset commit deferred", error=str(exc)[:200])
