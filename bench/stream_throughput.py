"""(a) Stream runner throughput, all six timeframes in one process.

Figures: the fold alone (decode + dedup + six timeframes) against msgspec decode
alone as its baseline, and the whole runner reading a pre-filled ``market.ticks``
from the embedded broker against a bare aiokafka consumer reading the same records.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import broker, free_port, row, topics
from dexorder.config import tcp_address
from dexorder.schemas import Tick, decode_tick, encode
from dexorder.topics import MARKET_TICKS
from streaming.pipeline import TickPipeline
from streaming.runner import StreamRunner

T0 = 1_700_000_000_000
TICKERS = [f"T{i:02d}/USDT" for i in range(20)]


def make_ticks(n: int) -> list[bytes]:
    rnd = random.Random(1)
    return [
        encode(
            Tick(
                exchange="BINANCE",
                symbol=TICKERS[i % 20],
                trade_id=str(i),
                price=100 + rnd.random(),
                amount=rnd.random(),
                ts=T0 + i * 5,
            )
        )
        for i in range(n)
    ]


def fold_only(ticks: list[bytes]) -> tuple[float, float]:
    t = time.perf_counter()
    for v in ticks:
        decode_tick(v)
    decode_rate = len(ticks) / (time.perf_counter() - t)
    pipe = TickPipeline(2_000)
    t = time.perf_counter()
    for i in range(0, len(ticks), 5_000):
        pipe.feed(ticks[i : i + 5_000], 0)
    return len(ticks) / (time.perf_counter() - t), decode_rate


async def through_kafka(ticks: list[bytes]) -> tuple[float, float]:
    with broker() as bootstrap:
        await topics(bootstrap)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20
        )
        await producer.start()
        for i, v in enumerate(ticks):
            await producer.send(MARKET_TICKS, v, key=TICKERS[i % 20].encode())
        await producer.flush()
        await producer.stop()

        # baseline: a bare consumer reading the same records
        raw = AIOKafkaConsumer(
            MARKET_TICKS,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            max_poll_records=5000,
        )
        await raw.start()
        n, t = 0, 0.0
        while n < len(ticks):
            batch = await raw.getmany(timeout_ms=1000)
            if batch and not t:
                t = time.perf_counter()
            n += sum(len(r) for r in batch.values())
        raw_rate = n / (time.perf_counter() - t)
        await raw.stop()

        with tempfile.TemporaryDirectory() as tmp:
            runner = StreamRunner(
                bootstrap=bootstrap,
                relay_xsub=tcp_address("127.0.0.1", free_port()),
                state_dir=Path(tmp),
                checkpoint_interval_ms=1_000,
            )
            task = asyncio.create_task(runner.run())
            while not runner.ready:
                await asyncio.sleep(0.005)
            t = time.perf_counter()
            while runner.counters["ticks"] < len(ticks):
                await asyncio.sleep(0.005)
            rate = len(ticks) / (time.perf_counter() - t)
            runner.stop()
            await task
    return rate, raw_rate


def main(n: int = 300_000) -> dict[str, float]:
    print(f"(a) stream runner, {n:,} ticks of 20 tickers, 6 timeframes")
    ticks = make_ticks(n)
    fold, decode = fold_only(ticks)
    row(
        "fold: decode+dedup+6 timeframes",
        f"{fold:,.0f} ticks/s",
        f"decode alone {decode:,.0f}/s, ratio {fold / decode:.2f}",
    )
    runner, raw = asyncio.run(through_kafka(ticks))
    row(
        "runner from Kafka (Tansu)",
        f"{runner:,.0f} ticks/s",
        f"bare consumer {raw:,.0f}/s, ratio {runner / raw:.2f}",
    )
    return {"fold_ticks_s": fold, "runner_ticks_s": runner, "raw_consumer_ticks_s": raw}


if __name__ == "__main__":
    main()
