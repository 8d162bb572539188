"""The stream runner's checkpoint cycle runs beside the runner, never in its way.

Before: the periodic checkpoint waited inline for Kafka's acks, an fsync and the offset
commit, so once a second every tick behind it waited too (most of the realtime path's
p99 at 10,000 trades/s). These tests pin what moving it to the background must keep:
the state and the offsets are captured together, nothing is written before the candles
it accounts for are acknowledged, one cycle at a time, and a failure still stops the
runner. The broker and the consumer group are real (Tansu); the acks are futures the
test resolves, standing in for the producer's, so that "not acknowledged yet" can be held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from dexorder.kafka import ensure_topics
from dexorder.topics import MARKET_TICKS
from streaming import checkpoint
from streaming.checkpoint import Checkpointer

pytestmark = pytest.mark.integration

TP = TopicPartition(MARKET_TICKS, 0)


@dataclass
class Acked:
    """What the producer's future resolves to (aiokafka's ``RecordMetadata``, in part)."""

    partition: int
    offset: int


@pytest.fixture
async def consumer(kafka: str) -> AsyncIterator[AIOKafkaConsumer]:
    await ensure_topics(kafka, {MARKET_TICKS: 1})
    c = AIOKafkaConsumer(bootstrap_servers=kafka, group_id="checkpointer-test")
    await c.start()
    c.assign([TP])
    try:
        yield c
    finally:
        await c.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_periodic_checkpoint_waits_for_acks_without_holding_the_runner(
    consumer: AIOKafkaConsumer, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoint.msgpack"
    state = {"book": b"before"}
    cp = Checkpointer(path, lambda: state["book"], interval_ms=1_000, last_ms=0)
    ack: asyncio.Future[Acked] = asyncio.get_running_loop().create_future()
    cp.read_to(0, 10)
    cp.sent(ack)  # type: ignore[arg-type]

    # returns at once though Kafka has not acknowledged the closed candle yet
    await asyncio.wait_for(cp.maybe_take(consumer, now_ms=1_000), timeout=0.5)
    await asyncio.sleep(0.1)  # room for the background cycle to write too early, if it would
    assert not path.exists(), "written before the candle it accounts for was acknowledged"

    # the runner goes on folding meanwhile; the cycle keeps what it captured
    state["book"] = b"after"
    cp.read_to(0, 20)
    await cp.maybe_take(consumer, now_ms=5_000)  # one cycle at a time: no second one
    ack.set_result(Acked(partition=0, offset=4))

    async def written() -> bool:
        return path.exists()

    await until(written)
    saved = checkpoint.load(path)
    assert saved is not None
    assert (saved.tick_offsets, saved.candle_offsets, saved.book) == ({0: 10}, {0: 5}, b"before")

    async def committed() -> bool:
        return bool(await consumer.committed(TP) == 10)

    await until(committed)

    # a waited-for cycle (shutdown, rebalance) takes the state as it is now
    await cp.take(consumer)
    saved = checkpoint.load(path)
    assert saved is not None
    assert (saved.tick_offsets, saved.book) == ({0: 20}, b"after")
    assert await consumer.committed(TP) == 20


async def test_a_failed_background_checkpoint_stops_the_runner(
    consumer: AIOKafkaConsumer, tmp_path: Path
) -> None:
    """An ack that failed means the candles may not be stored: the runner must not go on
    as if its checkpoint held (it stops, and restarts from the last good checkpoint)."""
    cp = Checkpointer(tmp_path / "checkpoint.msgpack", lambda: b"", interval_ms=1_000)
    ack: asyncio.Future[Acked] = asyncio.get_running_loop().create_future()
    cp.read_to(0, 3)
    cp.sent(ack)  # type: ignore[arg-type]
    await cp.maybe_take(consumer, now_ms=1_000)
    ack.set_exception(KafkaTimeoutError())
    deadline = time.monotonic() + 10
    with pytest.raises(KafkaTimeoutError):
        while time.monotonic() < deadline:  # raised once the runner looks again
            await cp.maybe_take(consumer, now_ms=1_100)
            await asyncio.sleep(0.01)
    assert not (tmp_path / "checkpoint.msgpack").exists()
