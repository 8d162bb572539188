"""The stream runner's ``stream_tick_read_age_seconds``: how old a tick record is when the
runner reads it, from the record's Kafka create time, on the real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from dexorder.config import tcp_address
from dexorder.kafka import ensure_topics
from dexorder.schemas import Tick, encode
from dexorder.topics import MARKET_TICKS
from launcher.ephemeral import free_port
from streaming.runner import StreamRunner

pytestmark = pytest.mark.integration

_NAME = "stream_tick_read_age_seconds"


def _reading(le: str | None = None) -> float:
    """Observations so far: all of them, or those at most ``le`` seconds old."""
    if le is None:
        return REGISTRY.get_sample_value(f"{_NAME}_count") or 0.0
    return REGISTRY.get_sample_value(f"{_NAME}_bucket", {"le": le}) or 0.0


async def _until(check: float, what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while _reading() < check:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_read_age_is_the_time_since_the_record_was_produced(
    kafka: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka)
    runner = StreamRunner(
        bootstrap=kafka,
        relay_xsub=tcp_address("127.0.0.1", free_port()),  # no relay listens: not needed
        state_dir=tmp_path,
    )
    task = asyncio.create_task(runner.run())
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=0)
    await producer.start()
    try:
        deadline = time.monotonic() + 30
        while not runner.ready:
            if task.done():
                task.result()  # the runner failed: say why
            assert time.monotonic() < deadline, "the runner never got its partitions"
            await asyncio.sleep(0.05)
        now = int(time.time() * 1000)

        def tick(i: int) -> bytes:
            return encode(
                Tick(
                    exchange="BINANCE",
                    symbol="BTC/USDT",
                    trade_id=str(i),
                    price=100.0 + i,
                    amount=1.0,
                    ts=now,
                )
            )

        # a record written 30 s ago (by its create time) is read at least 30 s old
        count, recent = _reading(), _reading("10.0")
        await producer.send_and_wait(
            MARKET_TICKS, tick(1), key=b"BINANCE:BTC/USDT", timestamp_ms=now - 30_000
        )
        await _until(count + 1, "the old record to be read")
        assert _reading("10.0") == recent  # older than 10 s: in none of the small buckets
        assert _reading("60.0") >= recent + 1

        # a record written now is read within a second, even on a loaded machine
        count, fresh = _reading(), _reading("1.0")
        await producer.send_and_wait(MARKET_TICKS, tick(2), key=b"BINANCE:BTC/USDT")
        await _until(count + 1, "the new record to be read")
        assert _reading("1.0") == fresh + 1
    finally:
        await producer.stop()
        runner.stop()
        await task
