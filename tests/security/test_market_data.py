"""Threat: forged or broken market data on Kafka (anyone who can produce to it) or from
an exchange (outside input) freezes a ticker or poisons the lake.

Before: one year-2100 tick moved its ticker's watermark to 2100, so every real tick
after it was dropped as late, for ever (the checkpoint kept it across restarts); NaN
and infinite prices were folded into candles and written to the lake. Now every
consumer validates what it reads (dexorder/market_validation.py), counts what it drops
and keeps going. Runs on the real platform: Tansu, the ingestor, the stream runner,
the lake writer, the relay.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator

import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaProducer
from pyiceberg.expressions import EqualTo

from dexorder.client import subscribe
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import BackfillDone, Candle, OhlcBatch, Tick, encode
from dexorder.topics import MARKET_CANDLES, MARKET_OHLC_BACKFILL, MARKET_TICKS
from launcher.ephemeral import RunningPlatform
from tests.security.supervised import (
    emulator_subscribed,
    exchange_trade,
    health,
    pid_of,
    supervised_platform,
    wait_restarted,
)

pytestmark = pytest.mark.integration

MINUTE = 60_000
YEAR_2100 = 4_102_444_800_000
NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with supervised_platform(tmp_path_factory.mktemp("market-data") / "home") as p:
        yield p


def now_ms() -> int:
    return int(time.time() * 1000)


class Candles:
    """Live candles of one ticker from the relay, collected in the background."""

    def __init__(self, p: RunningPlatform, ticker: str) -> None:
        self.seen: list[Candle] = []
        self._stream: AsyncIterator[Candle] = subscribe(ticker, "1m", config=p.cfg)
        self._task = asyncio.ensure_future(self._collect())

    async def _collect(self) -> None:
        async for c in self._stream:
            self.seen.append(c)

    def has(self, pred: Callable[[Candle], bool]) -> bool:
        return any(pred(c) for c in self.seen)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def until_seen(
    candles: Candles, price: float, send: Callable[[int], object], timeout: float = 30
) -> None:
    """Send (attempt number) until a candle update closing at ``price`` arrives.

    Sending again covers the moments a fresh subscription or restarted part still needs."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        result = send(attempt)
        if asyncio.iscoroutine(result):
            await result
        attempt += 1
        for _ in range(5):
            if candles.has(lambda c: c.close == price):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"no live candle closing at {price} within {timeout:.0f}s")


def metric(p: RunningPlatform, part: str, line_start: str) -> float:
    url = p.part(part).probe.replace("/healthz", "/metrics")
    with urllib.request.urlopen(url, timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_forged_ticks_are_dropped_counted_and_the_ticker_keeps_flowing(
    platform: RunningPlatform,
) -> None:
    """Stops a Kafka producer from freezing a ticker with a year-2100 tick, or poisoning
    its candles with NaN, infinite, zero or negative prices and amounts; also across a
    restart of the stream runner."""
    ticker, symbol = "BINANCE:ETH/USDT", "ETH/USDT"
    producer = AIOKafkaProducer(bootstrap_servers=platform.bootstrap, linger_ms=1)
    await producer.start()
    candles = Candles(platform, ticker)
    seq = iter(range(1_000_000))

    async def send(price: float, amount: float = 1.0, ts: int | None = None) -> None:
        tick = Tick(
            exchange="BINANCE",
            symbol=symbol,
            trade_id=f"t{next(seq)}",
            price=price,
            amount=amount,
            ts=now_ms() if ts is None else ts,
        )
        await producer.send_and_wait(MARKET_TICKS, encode(tick), key=ticker.encode())

    try:
        await until_seen(candles, 2000.5, lambda _: send(2000.5))
        forged = [
            {"price": 31337.0, "ts": YEAR_2100},
            {"price": NAN},
            {"price": INF},
            {"price": -INF},
            {"price": 0.0},
            {"price": -2000.0},
            {"price": 2000.0, "amount": NAN},
            {"price": 2000.0, "amount": INF},
            {"price": 2000.0, "amount": 0.0},
            {"price": 2000.0, "amount": -1.0},
        ]
        for f in forged:
            await send(**f)  # type: ignore[arg-type]
        await until_seen(candles, 2001.25, lambda _: send(2001.25))

        stream = platform.part("stream").probe
        reasons = health(stream)["invalid_reasons"]
        assert reasons == {
            "ts_in_future": 1,
            "price_not_finite": 3,
            "price_not_positive": 2,
            "amount_not_finite": 2,
            "amount_not_positive": 2,
        }
        assert health(stream)["invalid"] == len(forged)
        assert metric(platform, "stream", 'stream_invalid_ticks_total{reason="ts_in_future"}') == 1
        # no candle carried a forged value
        for c in candles.seen:
            assert all(0 < v < INF for v in (c.open, c.high, c.low, c.close))
            assert 0 < c.volume < INF and c.high < 31337.0

        # a restarted runner (checkpoint restored, Kafka re-read) keeps the ticker flowing
        old = pid_of(platform, "stream")
        os.kill(old, signal.SIGTERM)
        await wait_restarted(platform, "stream", old)
        await until_seen(candles, 2002.75, lambda _: send(2002.75))
        await send(31338.0, ts=YEAR_2100)
        await until_seen(candles, 2003.5, lambda _: send(2003.5))
        assert health(stream)["invalid_reasons"] == {"ts_in_future": 1}
    finally:
        await candles.close()
        await producer.stop()


async def test_broken_candles_never_reach_the_lake(platform: RunningPlatform) -> None:
    """Stops a Kafka producer from writing NaN, infinite, negative, inconsistent or
    future-dated candles into the lake, live (market.candles) or backfill
    (market.ohlc.backfill)."""
    ticker = "BINANCE:LAKE/USDT"
    t0 = 1_704_067_200_000  # 2024-01-01

    def live(i: int, **over: float) -> Candle:
        fields = {"open": 10.0, "high": 12.0, "low": 9.0, "close": 11.0, "volume": 5.0, **over}
        return Candle(
            exchange="BINANCE",
            symbol="LAKE/USDT",
            timeframe="1m",
            open_time=t0 + i * MINUTE,
            trades=3,
            closed=True,
            open=fields["open"],
            high=fields["high"],
            low=fields["low"],
            close=fields["close"],
            volume=fields["volume"],
        )

    good_live = [live(0), live(1), live(2, volume=0.0)]
    bad_live = [
        live(10, open=NAN),
        live(11, high=INF),
        live(12, low=-INF),
        live(13, close=NAN),
        live(14, volume=INF),
        live(15, volume=-1.0),
        live(16, high=1.0),  # high below low
        Candle(
            exchange="BINANCE",
            symbol="LAKE/USDT",
            timeframe="1m",
            open_time=YEAR_2100,
            open=10.0,
            high=12.0,
            low=9.0,
            close=11.0,
            volume=5.0,
            trades=3,
            closed=True,
        ),
    ]
    hour = 3_600_000
    good_rows = [(t0 + i * hour, 10.0, 12.0, 9.0, 11.0, 5.0, 0) for i in range(3)]
    bad_rows = [
        (t0 + 10 * hour, NAN, 12.0, 9.0, 11.0, 5.0, 0),
        (t0 + 11 * hour, 10.0, INF, 9.0, 11.0, 5.0, 0),
        (t0 + 12 * hour, 10.0, 12.0, 9.0, 11.0, -INF, 0),
        (t0 + 13 * hour, -10.0, 12.0, 9.0, 11.0, 5.0, 0),
    ]
    page = OhlcBatch(
        request_id="forged",
        ticker=ticker,
        timeframe="1h",
        rows=[good_rows[0], *bad_rows, *good_rows[1:]],
    )
    done = BackfillDone(
        request_id="forged", ticker=ticker, timeframe="1h", start=t0, end=t0 + 20 * hour
    )
    producer = AIOKafkaProducer(bootstrap_servers=platform.bootstrap)
    await producer.start()
    try:
        for c in [*good_live[:1], *bad_live, *good_live[1:]]:
            await producer.send_and_wait(MARKET_CANDLES, encode(c), key=ticker.encode())
        for m in (page, done):
            await producer.send_and_wait(MARKET_OHLC_BACKFILL, encode(m), key=ticker.encode())
    finally:
        await producer.stop()

    writer = platform.part("lake-writer").probe
    table = ohlc_table(open_catalog(platform.cfg), platform.cfg.lake.namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        table.refresh()
        rows = table.scan(row_filter=EqualTo(term="ticker", value=ticker)).to_arrow()
        if rows.num_rows >= len(good_live) + len(good_rows) and health(writer).get("history_ready"):
            break
        await asyncio.sleep(0.2)
    got = sorted(
        zip(
            rows["timeframe"].to_pylist(),
            (t // 1000 for t in pc.cast(rows["open_time"], "int64").to_pylist()),
            strict=True,
        )
    )
    assert got == sorted(
        [("1m", c.open_time) for c in good_live] + [("1h", r[0]) for r in good_rows]
    )
    for name in ("open", "high", "low", "close", "volume"):
        assert all(math.isfinite(v) for v in rows[name].to_pylist()), name
    h = health(writer)
    assert h["invalid"] == len(bad_live) + len(bad_rows)
    assert h["invalid_reasons"] == {
        "live:open_not_finite": 1,
        "live:high_not_finite": 1,
        "live:low_not_finite": 1,
        "live:close_not_finite": 1,
        "live:volume_not_finite": 1,
        "live:volume_negative": 1,
        "live:ohlc_inconsistent": 1,
        "live:open_time_in_future": 1,
        "backfill:open_not_finite": 1,
        "backfill:high_not_finite": 1,
        "backfill:volume_not_finite": 1,
        "backfill:open_not_positive": 1,
    }


async def test_a_future_dated_trade_from_the_exchange_is_dropped(
    platform: RunningPlatform,
) -> None:
    """Stops an exchange (or whoever speaks for it) from freezing a ticker with a
    future-dated trade: the ingestor drops and counts it, and later trades still flow."""
    ticker = "BINANCE:BTC/USDT"
    ingestor = platform.part("ingestor-binance").probe
    stream = platform.part("stream").probe

    def stream_dropped() -> int:
        return int(str(health(stream).get("invalid", 0)))

    await emulator_subscribed(platform, "btcusdt@trade")
    candles = Candles(platform, ticker)
    try:
        await until_seen(candles, 777.25, lambda _: exchange_trade(platform, "BTCUSDT", 777.25))
        before = int(health(ingestor)["malformed"])  # type: ignore[call-overload]
        dropped_downstream = stream_dropped()
        await exchange_trade(platform, "BTCUSDT", 31337.0, ts=YEAR_2100, trade_id=99_000_001)
        deadline = time.monotonic() + 20
        while int(health(ingestor)["malformed"]) == before:  # type: ignore[call-overload]
            assert time.monotonic() < deadline, "the ingestor did not count the trade"
            await asyncio.sleep(0.1)
        await until_seen(candles, 778.5, lambda _: exchange_trade(platform, "BTCUSDT", 778.5))
        assert not candles.has(lambda c: c.high >= 31337.0)
        # it never reached Kafka: the stream runner had nothing to drop
        assert stream_dropped() == dropped_downstream
    finally:
        await candles.close()
