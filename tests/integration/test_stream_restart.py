"""SIGKILL the stream runner mid-stream: no closed candle lost, none emitted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from dexorder.kafka import ensure_topics
from dexorder.schemas import Candle, Tick, decode_candle, encode
from dexorder.topics import MARKET_CANDLES, MARKET_TICKS
from launcher.ephemeral import start_platform
from streaming.candles import CandleBook
from tests.integration.part_process import health, start_part

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000
TICKERS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
LATENESS = 2_000


def make_ticks(n_per_ticker: int) -> list[Tick]:
    """Interleaved ticks of three tickers, 1.5 s of trade time apart, in time order."""
    out = []
    for i in range(n_per_ticker):
        for k, sym in enumerate(TICKERS):
            out.append(
                Tick(
                    exchange="BINANCE",
                    symbol=sym,
                    trade_id=str(i),
                    ts=T0 + i * 1500 + k,
                    price=100.0 + (i * 7919 % 1000) / 10 + k,
                    amount=0.5 + (i % 5),
                )
            )
    return out


async def start_runner(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the runner and wait until it has its partitions."""
    port = env["DEXORDER_STREAM__HEALTH_PORT"]
    return await start_part("streaming", env, port, "the stream runner")


async def read_all_candles(bootstrap: str) -> list[Candle]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [
            TopicPartition(MARKET_CANDLES, p)
            for p in reader.partitions_for_topic(MARKET_CANDLES) or ()
        ]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        out: list[Candle] = []
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            for tp, records in (await reader.getmany(*left, timeout_ms=1000)).items():
                out.extend(decode_candle(r.value or b"") for r in records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return out
    finally:
        await reader.stop()


async def test_sigkill_mid_stream_loses_and_repeats_no_closed_candle(
    isolated_env: dict[str, str],
) -> None:
    p = start_platform(isolated_env, only={"kafka", "relay"})
    env = {**p.env, "DEXORDER_STREAM__CHECKPOINT_INTERVAL_MS": "100"}
    port = env["DEXORDER_STREAM__HEALTH_PORT"]
    runner = None
    try:
        await ensure_topics(p.bootstrap)
        ticks = make_ticks(6_000)  # ~2.5 hours of trade time for each ticker
        # far-future trades close every candle, up to the daily ones
        closers = [
            Tick(
                exchange="BINANCE",
                symbol=s,
                trade_id="close",
                ts=T0 + 3 * 86_400_000,
                price=1.0,
                amount=1.0,
            )
            for s in TICKERS
        ]
        runner = await start_runner(env)
        producer = AIOKafkaProducer(bootstrap_servers=p.bootstrap, linger_ms=2)
        await producer.start()
        kills = 0
        try:
            for start in range(0, len(ticks), 150):
                for t in ticks[start : start + 150]:
                    await producer.send(MARKET_TICKS, encode(t), key=t.ticker.encode())
                await producer.flush()
                closed = health(port).get("closed", 0)
                # kill while candles are flowing, twice, at different points
                if (kills == 0 and closed >= 40) or (kills == 1 and closed >= 150):
                    runner.send_signal(signal.SIGKILL)
                    runner.wait()
                    kills += 1
                    runner = await start_runner(env)
                await asyncio.sleep(0.02)  # a live-like pace: the runner keeps up between batches
            for t in closers:
                await producer.send(MARKET_TICKS, encode(t), key=t.ticker.encode())
            await producer.flush()
        finally:
            await producer.stop()
        assert kills == 2, "the runner was not killed mid-stream"

        expected_book = CandleBook(LATENESS)
        for t in [*ticks, *closers]:
            expected_book.add(t)
        expected = {(c.ticker, c.timeframe, c.open_time): c for c in expected_book.drain()}

        # wait for the restarted runner to emit everything
        for _ in range(600):
            got = await read_all_candles(p.bootstrap)
            if len(got) >= len(expected):
                break
            await asyncio.sleep(0.1)
        counts = Counter((c.ticker, c.timeframe, c.open_time) for c in got)
        twice = [k for k, n in counts.items() if n > 1]
        assert not twice, f"emitted more than once: {twice[:5]}"
        missing = expected.keys() - counts.keys()
        assert not missing, f"lost: {sorted(missing)[:5]}"
        assert counts.keys() == expected.keys()
        for c in got:
            e = expected[(c.ticker, c.timeframe, c.open_time)]
            assert (c.open, c.high, c.low, c.close, c.trades) == (
                e.open,
                e.high,
                e.low,
                e.close,
                e.trades,
            )
            assert c.volume == pytest.approx(e.volume)
    finally:
        if runner is not None and runner.poll() is None:
            os.kill(runner.pid, signal.SIGTERM)
            runner.wait(15)
        p.stop()
