"""(c) Trade → subscriber latency through the whole platform, on loopback.

A trade is made at the exchange emulator; it travels through CCXT's WebSocket,
the ingestor, Kafka, the stream runner and the relay, and is *visible* once a
1m candle update whose close is that trade (or a later one) reaches a relay
subscriber. Every trade gets a unique, rising price, so the close names the
newest trade the subscriber can see. Trades are made in batches every 5 ms at
1k and 10k trades/s; latency is measured from just before the batch is sent.
The baseline in the same run is a bare ZeroMQ PUB→SUB hop on loopback.

A trade lost on the way would hide behind a later close, so each rate also
says how many of its trades the stream runner read (its ``/healthz`` tick
count): every trade seen means every one of them. The load generator (this
process) and the exchange emulator share the machine's cores with the platform;
each row says how much of a core the generator took and the load average.

Each rate also prints the Kafka hop alone, from the stream runner's
``stream_tick_read_age_seconds`` (a record's create time, the producer's append, to the
runner's read; bucket bounds, so "p99 <= 5 ms"): the embedded broker's share, which grows
with its uptime (README, (c)).

A third row writes the ticks straight into ``market.ticks`` (as the ingestor
would) at 10k/s: the stream runner and the relay alone, without the exchange
side (the emulator and CCXT), which costs the most CPU per trade.

First, the CPU the ingestor spends decoding one streamed trade: CCXT's parse
(``json.loads`` and ``parse_ws_trade``, then :func:`tick_from_ccxt`; CCXT's own
bookkeeping per message comes on top) against the native Binance decoder the
ingestor uses (:mod:`services.ingestor.binance_trades`). With
``BENCH_CCXT_TRADES=1`` the ingestor streams through CCXT's ``watch_trades``
instead (``native_trade_stream: false``), to compare the whole path both ways.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import zmq
import zmq.asyncio
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench.common import pct, row
from dexorder.client import request
from dexorder.config import tcp_address
from dexorder.exchanges import make_exchange
from dexorder.schemas import RealtimeRequest, Tick, decode_candle, encode
from dexorder.topics import MARKET_TICKS, ohlc_topic
from launcher.ephemeral import RunningPlatform, ephemeral_env, free_port, start_platform
from services.ingestor.binance_trades import BinanceTradeDecoder, spot_symbols
from services.ingestor.trades import tick_from_ccxt

TICKER = "BINANCE:BTC/USDT"
BASE_PRICE = 50_000.0
STEP = 0.01
BATCH_INTERVAL_S = 0.005


def _ticks_read(p: RunningPlatform) -> int:
    """How many tick records the stream runner has read (its ``/healthz``)."""
    url = f"http://127.0.0.1:{p.cfg.stream.health_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(json.loads(resp.read())["ticks"])


def _read_ages(p: RunningPlatform) -> dict[float, float]:
    """The stream runner's ``stream_tick_read_age_seconds`` so far: observations at most
    ``le`` seconds old, by ``le`` (its ``/metrics``)."""
    url = f"http://127.0.0.1:{p.cfg.stream.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        float(s.labels["le"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "stream_tick_read_age_seconds"
        for s in family.samples
        if s.name.endswith("_bucket")
    }


def _age_pct(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The bucket bound (ms) at or under which ``q`` % of the reads between the two
    readings were (inf: beyond the largest bucket)."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(math.inf, 0.0)
    for le, n in counts.items():
        if total and n >= total * q / 100:
            return le * 1000
    return math.inf


def _parts_cpu(p: RunningPlatform) -> dict[str, float]:
    """CPU seconds each running part has used so far (Linux ``/proc``; else none)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for r in p.supervisor.running:
        try:
            fields = Path(f"/proc/{r.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[r.part.name] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


class _Source:
    """Where the trades are made: at the exchange emulator (the whole path), or written as
    ticks straight into ``market.ticks`` (the stream runner and the relay alone)."""

    def __init__(self, p: RunningPlatform, into_kafka: bool) -> None:
        self.p, self.into_kafka = p, into_kafka
        self.http: aiohttp.ClientSession | None = None
        self.producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> _Source:
        if self.into_kafka:
            # as the ingestor writes them: same key, so the same partition, and no linger
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.p.bootstrap, linger_ms=0, acks=1, max_batch_size=1 << 20
            )
            await self.producer.start()
        else:
            self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.http is not None:
            await self.http.close()

    async def send(self, seq: int, n: int) -> None:
        """Trades ``seq`` … ``seq + n - 1``, each with its own rising price."""
        now_ms = int(time.time() * 1000)
        if self.producer is not None:
            for i in range(n):
                tick = Tick(
                    exchange="BINANCE",
                    symbol="BTC/USDT",
                    trade_id=str(10**12 + seq + i),
                    price=BASE_PRICE + (seq + i) * STEP,
                    amount=0.01,
                    ts=now_ms,
                )
                await self.producer.send(MARKET_TICKS, encode(tick), key=TICKER.encode())
            return
        assert self.http is not None
        trades = [
            {
                "symbol": "BTCUSDT",
                "price": BASE_PRICE + (seq + i) * STEP,
                "qty": 0.01,
                "time": now_ms,
                "id": 10**12 + seq + i,
            }
            for i in range(n)
        ]
        await self.http.post(f"{self.p.cfg.emulator_url}/emulator/trades", json={"trades": trades})


async def _measure(
    p: RunningPlatform, rate: int, seconds: float, seq0: int, into_kafka: bool = False
) -> tuple[list[float], int]:
    """Latencies (ms) of the trades seen, and how many trades were not seen."""
    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, ohlc_topic(TICKER, "1m").encode())
    sub.connect(p.cfg.relay.xpub_address)
    await request(p.cfg.relay.router_address, RealtimeRequest(ticker=TICKER))
    sent: dict[int, float] = {}
    latencies: list[float] = []
    visible = seq0 - 1
    done = asyncio.Event()

    async def receive() -> None:
        nonlocal visible
        while not done.is_set() or visible < max(sent, default=seq0):
            if not await sub.poll(2000):
                break
            _, body = await sub.recv_multipart()
            now = time.monotonic()
            seq = round((decode_candle(body).close - BASE_PRICE) / STEP)
            for s in range(visible + 1, seq + 1):
                if s in sent:
                    latencies.append((now - sent[s]) * 1000)
            visible = max(visible, seq)

    per_batch = max(1, round(rate * BATCH_INTERVAL_S))
    ticks_before = await asyncio.to_thread(_ticks_read, p)
    ages0 = await asyncio.to_thread(_read_ages, p)
    parts0 = _parts_cpu(p)
    cpu0, wall0 = time.process_time(), time.monotonic()
    receiver = asyncio.create_task(receive())
    async with _Source(p, into_kafka) as source:
        seq = seq0
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            t = time.monotonic()
            for i in range(per_batch):
                sent[seq + i] = t
            await source.send(seq, per_batch)
            seq += per_batch
            next_at += BATCH_INTERVAL_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    done.set()
    await receiver
    sub.close()
    wall = time.monotonic() - wall0
    generator = (time.process_time() - cpu0) / wall
    parts1 = _parts_cpu(p)
    busy = sorted(((parts1[k] - v) / wall, k) for k, v in parts0.items() if k in parts1)
    print("    CPU of a core: " + ", ".join(f"{k} {c:.0%}" for c, k in reversed(busy) if c > 0.02))
    ages1 = await asyncio.to_thread(_read_ages, p)
    print(
        "    Kafka hop (a record's create time to the runner's read, the oldest of each fetch):"
        f" p50 <= {_age_pct(ages0, ages1, 50):g} ms, p99 <= {_age_pct(ages0, ages1, 99):g} ms"
    )
    read = await asyncio.to_thread(_ticks_read, p) - ticks_before
    lost = len(sent) - len(latencies)
    if lost:
        print(f"    ({lost} of {len(sent)} trades not seen within 2 s)")
    print(
        f"    stream runner read {read:,} of {len(sent):,} trades; load generator "
        f"{generator:.0%} of a core; load average {os.getloadavg()[0]:.1f}"
    )
    # A trade the runner never read still looks seen once a later close covers it; both
    # kinds of loss count as not seen.
    return latencies, max(lost, len(sent) - read)


async def _decode_cost(p: RunningPlatform, n: int = 20_000) -> tuple[float, float]:
    """CPU µs per trade event: CCXT's parse into a tick, and the native decoder's."""
    ex = make_exchange("binance", p.cfg.emulator_url, enableRateLimit=False)
    try:
        await ex.load_markets()
    finally:
        await ex.close()
    now = int(time.time() * 1000)
    raws = [
        json.dumps(
            {
                "e": "trade",
                "E": now,
                "s": "BTCUSDT",
                "t": 10**9 + i,
                "p": f"{BASE_PRICE + i * STEP:.8f}",
                "q": "0.01000000",
                "T": now,
                "m": i % 2 == 0,
                "M": True,
            }
        )
        for i in range(n)
    ]
    market = ex.market("BTC/USDT")
    t0 = time.process_time()
    slow = [tick_from_ccxt("BINANCE", ex.parse_ws_trade(json.loads(r), market)) for r in raws]
    t1 = time.process_time()
    decoder = BinanceTradeDecoder("BINANCE", spot_symbols(ex.markets.values()))
    fast = [decoder.tick(r) for r in raws]
    t2 = time.process_time()
    assert fast == slow, "the two paths disagree"
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


async def _zmq_hop(n: int = 2_000) -> list[float]:
    ctx = zmq.asyncio.Context.instance()
    addr = tcp_address("127.0.0.1", free_port())
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.bind(addr)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr)
    while not await sub.poll(10):
        await pub.send(b"warmup")
    while await sub.poll(50):
        await sub.recv()
    out = []
    for _ in range(n):
        t = time.monotonic()
        await pub.send(b"x" * 120)
        await sub.recv()
        out.append((time.monotonic() - t) * 1000)
    pub.close()
    sub.close()
    return out


async def _run(seconds: float) -> dict[str, float]:
    home = Path(tempfile.mkdtemp())
    env = ephemeral_env(home, DEXORDER_LOG_LEVEL="warning")
    if os.environ.get("BENCH_CCXT_TRADES") == "1":
        exchanges = json.loads(env["DEXORDER_EXCHANGES"])
        env["DEXORDER_EXCHANGES"] = json.dumps(
            [{**ex, "native_trade_stream": False} for ex in exchanges]
        )
        print("  (trades streamed through CCXT's watch_trades: BENCH_CCXT_TRADES=1)")
    os.environ.update(env)
    p = start_platform(env)
    out: dict[str, float] = {}
    try:
        ccxt_us, native_us = await _decode_cost(p)
        row("ingestor CPU per trade: CCXT parse", f"{ccxt_us:.1f} us", "(the baseline)")
        row(
            "ingestor CPU per trade: native decode",
            f"{native_us:.1f} us",
            f"{ccxt_us / native_us:.0f}x less; load average {os.getloadavg()[0]:.1f}",
        )
        out["ccxt_parse_us"], out["native_decode_us"] = ccxt_us, native_us
        await _measure(p, 200, 2.0, 1)  # warm up the whole path
        seq0 = 1_000_000
        for rate in (1_000, 10_000):
            lat, unseen = await _measure(p, rate, seconds, seq0)
            seq0 += rate * int(seconds + 2) + 1_000_000
            p50, p99 = pct(lat, 50), pct(lat, 99)
            row(
                f"trade -> subscriber at {rate:,} trades/s",
                f"p50 {p50:.1f} ms",
                f"p99 {p99:.1f} ms, {len(lat):,} trades, {unseen:,} not seen",
            )
            # the target is p99 with every trade seen: a lost trade misses it
            out[f"p50_{rate}"], out[f"p99_{rate}"] = p50, p99 if not unseen else math.inf
            out[f"unseen_{rate}"] = unseen
        # the stream runner and the relay alone: ticks written straight into Kafka
        rate = 10_000
        lat, unseen = await _measure(p, rate, seconds, seq0, into_kafka=True)
        p50, p99 = pct(lat, 50), pct(lat, 99)
        row(
            f"tick in Kafka -> subscriber at {rate:,} ticks/s",
            f"p50 {p50:.1f} ms",
            f"p99 {p99:.1f} ms, {len(lat):,} ticks, {unseen:,} not seen",
        )
        out["p50_kafka_10000"], out["p99_kafka_10000"] = p50, p99 if not unseen else math.inf
        hop = await _zmq_hop()
        row(
            "baseline: one bare ZeroMQ PUB->SUB hop",
            f"p50 {pct(hop, 50):.3f} ms",
            f"p99 {pct(hop, 99):.3f} ms",
        )
    finally:
        p.stop()
    return out


def main(seconds: float = 5.0) -> dict[str, float]:
    print("(c) trade -> subscriber latency, whole platform on loopback")
    return asyncio.run(_run(seconds))


if __name__ == "__main__":
    main()
