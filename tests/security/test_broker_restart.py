"""Threat: the market data path stops silently and the platform still says it is healthy.

Before: the embedded broker (Tansu, memory storage) comes back from a restart with
empty topics; the stream runner and the lake writer then waited at their checkpointed
offsets for records the new topics would not have for a long time (40+ minutes at a
live pace), and `dexorder status` showed every part healthy meanwhile. Now they notice
offsets beyond the log end and read the new topics from the beginning, and status
compares what the ingestors hand over with what the stream runner takes (freshness,
not just liveness). Runs the real platform under its real supervisor.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from pyiceberg.expressions import EqualTo

from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import Candle, Tick, encode
from dexorder.topics import MARKET_CANDLES, MARKET_TICKS
from launcher.ephemeral import RunningPlatform
from streaming import checkpoint
from tests.security.supervised import (
    emulator_subscribed,
    exchange_trade,
    pid_of,
    supervised_platform,
    wait_restarted,
)
from tests.security.test_market_data import Candles, until_seen

pytestmark = pytest.mark.integration

MINUTE = 60_000
STALE_AFTER_S = 3


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with supervised_platform(
        tmp_path_factory.mktemp("broker-restart") / "home",
        DEXORDER_MARKET_DATA__STALE_AFTER_S=str(STALE_AFTER_S),
    ) as p:
        yield p


def status(p: RunningPlatform) -> tuple[int, dict[str, dict[str, object]]]:
    """`dexorder status --json`: its exit code, and its parts by name with the market data
    freshness as "market-data"."""
    out = subprocess.run(
        [sys.executable, "-m", "launcher", "status", "--json"],
        env=p.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(out.stdout)
    parts = {part["name"]: part for part in report["parts"]}
    parts["market-data"] = report.get("market_data") or {"healthy": None, "detail": "absent"}
    return out.returncode, parts


async def test_status_is_unhealthy_while_ticks_stop_reaching_the_stream(
    platform: RunningPlatform,
) -> None:
    """Stops a hung broker from passing for a healthy platform: every part still answers
    its health check (the broker still accepts connections), but no tick of a ticker whose
    exchange keeps trading reaches the stream runner, and status says so."""
    await emulator_subscribed(platform, "btcusdt@trade")
    candles = Candles(platform, "BINANCE:BTC/USDT")
    kafka = pid_of(platform, "kafka")
    price = iter(range(1, 1_000_000))
    try:
        await until_seen(candles, 500.5, lambda _: exchange_trade(platform, "BTCUSDT", 500.5))
        code, parts = status(platform)
        assert code == 0 and parts["market-data"]["healthy"] is True, parts

        os.kill(kafka, signal.SIGSTOP)  # hung, not gone
        deadline = time.monotonic() + 45
        while True:
            for _ in range(3):
                await exchange_trade(platform, "BTCUSDT", 600.0 + next(price))
                await asyncio.sleep(0.3)
            code, parts = status(platform)
            if not parts["market-data"]["healthy"]:
                break
            assert time.monotonic() < deadline, f"status stayed healthy: {parts}"
        assert code == 1
        assert "BINANCE:BTC/USDT" in str(parts["market-data"]["detail"])
        assert parts["kafka"]["healthy"] is True  # liveness alone could not tell
        assert parts["stream"]["healthy"] is True

        os.kill(kafka, signal.SIGCONT)
        deadline = time.monotonic() + 45
        while True:
            await exchange_trade(platform, "BTCUSDT", 700.0 + next(price))
            code, parts = status(platform)
            if code == 0 and parts["market-data"]["healthy"]:
                break
            assert time.monotonic() < deadline, f"status did not recover: {parts}"
            await asyncio.sleep(0.3)
    finally:
        os.kill(kafka, signal.SIGCONT)
        await candles.close()


async def test_live_candles_are_back_within_a_minute_after_the_broker_is_killed(
    platform: RunningPlatform,
) -> None:
    """Stops a broker restart from silently ending live candles and lake writes: the stream
    runner and the lake writer read the new, empty topics from their beginning."""
    await emulator_subscribed(platform, "btcusdt@trade")
    ticker = "BINANCE:BTC/USDT"
    candles = Candles(platform, ticker)
    lake_ticker = "BINANCE:KILL/USDT"
    t0 = 1_704_067_200_000

    def lake_candle(i: int) -> Candle:
        return Candle(
            exchange="BINANCE",
            symbol="KILL/USDT",
            timeframe="1m",
            open_time=t0 + i * MINUTE,
            open=1.0,
            high=2.0,
            low=0.5,
            close=1.5,
            volume=1.0,
            trades=1,
            closed=True,
        )

    table = ohlc_table(open_catalog(platform.cfg), platform.cfg.lake.namespace)

    async def lake_rows(want: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            table.refresh()
            rows = table.scan(row_filter=EqualTo(term="ticker", value=lake_ticker)).to_arrow()
            n = int(rows.num_rows)
            if n >= want or time.monotonic() > deadline:
                return n
            await asyncio.sleep(0.2)

    try:
        await until_seen(candles, 800.5, lambda _: exchange_trade(platform, "BTCUSDT", 800.5))
        # enough history before the kill that waiting for the same offsets in the new
        # topics would take far longer than a minute
        producer = AIOKafkaProducer(bootstrap_servers=platform.bootstrap, linger_ms=5)
        await producer.start()
        try:
            now = int(time.time() * 1000)
            for i in range(3_000):
                tick = Tick(
                    exchange="BINANCE",
                    symbol="BTC/USDT",
                    trade_id=f"pre-{i}",
                    price=800.0,
                    amount=0.01,
                    ts=now - 1_000 + i % 1_000,
                )
                await producer.send(MARKET_TICKS, encode(tick), key=ticker.encode())
            for i in range(500):
                await producer.send(
                    MARKET_CANDLES, encode(lake_candle(i)), key=lake_ticker.encode()
                )
            await producer.flush()
        finally:
            await producer.stop()
        assert await lake_rows(500, 60) == 500
        ckpt_path = platform.cfg.home / "state" / "stream" / "checkpoint.msgpack"
        deadline = time.monotonic() + 30
        while True:
            saved = checkpoint.load(ckpt_path)
            if saved and sum(saved.tick_offsets.values()) >= 3_000:
                break
            assert time.monotonic() < deadline, "the stream runner did not checkpoint"
            await asyncio.sleep(0.1)

        stream_pid, writer_pid = pid_of(platform, "stream"), pid_of(platform, "lake-writer")
        killed_at = time.monotonic()
        os.kill(pid_of(platform, "kafka"), signal.SIGKILL)
        await until_seen(
            candles,
            801.25,
            lambda _: exchange_trade(platform, "BTCUSDT", 801.25),
            timeout=60,
        )
        back_after = time.monotonic() - killed_at
        print(f"live candles back {back_after:.1f}s after the broker was killed")
        assert back_after < 60, back_after

        # the lake writer takes closed candles from the new topic too
        producer = AIOKafkaProducer(bootstrap_servers=platform.bootstrap)
        await producer.start()
        try:
            for i in range(1_000, 1_003):
                await producer.send_and_wait(
                    MARKET_CANDLES, encode(lake_candle(i)), key=lake_ticker.encode()
                )
        finally:
            await producer.stop()
        assert await lake_rows(503, 60) == 503
        # and once the supervisor has restarted the broker's users, they still flow; the
        # stream runner is not one of them: it recovered in place (a restart would only
        # have stopped live candles again while a new process restored its checkpoint)
        await wait_restarted(platform, "lake-writer", writer_pid, timeout=90)
        await until_seen(
            candles, 802.75, lambda _: exchange_trade(platform, "BTCUSDT", 802.75), timeout=60
        )
        assert pid_of(platform, "stream") == stream_pid
        # both noticed (the lake writer before or after the supervisor restarted it)
        for part in ("stream", "lake-writer"):
            log = (platform.cfg.home / "logs" / f"{part}.log").read_text(errors="replace")
            assert "topic created again; reading it from the start" in log, part
    finally:
        await candles.close()
