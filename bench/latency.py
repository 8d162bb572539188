"""(c) Trade → subscriber latency through the whole platform, on loopback.

A trade is made at the exchange emulator; it travels through CCXT's WebSocket,
the ingestor, Kafka, the stream runner and the relay, and is *visible* once a
1m candle update whose close is that trade (or a later one) reaches a relay
subscriber. Every trade gets a unique, rising price, so the close names the
newest trade the subscriber can see. Trades are made in batches every 5 ms at
1k and 10k trades/s; latency is measured from just before the batch is sent.
The baseline in the same run is a bare ZeroMQ PUB→SUB hop on loopback.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp
import zmq
import zmq.asyncio

from bench.common import pct, row
from dexorder.client import request
from dexorder.config import tcp_address
from dexorder.schemas import RealtimeRequest, decode_candle
from dexorder.topics import ohlc_topic
from launcher.ephemeral import RunningPlatform, ephemeral_env, free_port, start_platform

BASE_PRICE = 50_000.0
STEP = 0.01
BATCH_INTERVAL_S = 0.005


async def _measure(p: RunningPlatform, rate: int, seconds: float, seq0: int) -> list[float]:
    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, ohlc_topic("BINANCE:BTC/USDT", "1m").encode())
    sub.connect(p.cfg.relay.xpub_address)
    await request(
        p.cfg.relay.router_address, RealtimeRequest(ticker="BINANCE:BTC/USDT")
    )
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
    receiver = asyncio.create_task(receive())
    async with aiohttp.ClientSession() as http:
        url = f"{p.cfg.emulator_url}/emulator/trades"
        seq = seq0
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            now_ms = int(time.time() * 1000)
            trades = [
                {
                    "symbol": "BTCUSDT",
                    "price": BASE_PRICE + (seq + i) * STEP,
                    "qty": 0.01,
                    "time": now_ms,
                    "id": 10**12 + seq + i,
                }
                for i in range(per_batch)
            ]
            t = time.monotonic()
            for i in range(per_batch):
                sent[seq + i] = t
            seq += per_batch
            await http.post(url, json={"trades": trades})
            next_at += BATCH_INTERVAL_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    done.set()
    await receiver
    sub.close()
    lost = len(sent) - len(latencies)
    if lost:
        print(f"    ({lost} of {len(sent)} trades not seen within 2 s)")
    return latencies


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
    os.environ.update(env)
    p = start_platform(env)
    out: dict[str, float] = {}
    try:
        await _measure(p, 200, 2.0, 1)  # warm up the whole path
        seq0 = 1_000_000
        for rate in (1_000, 10_000):
            lat = await _measure(p, rate, seconds, seq0)
            seq0 += rate * int(seconds + 2) + 1_000_000
            p50, p99 = pct(lat, 50), pct(lat, 99)
            row(
                f"trade -> subscriber at {rate:,} trades/s",
                f"p50 {p50:.1f} ms",
                f"p99 {p99:.1f} ms, {len(lat):,} trades",
            )
            out[f"p50_{rate}"], out[f"p99_{rate}"] = p50, p99
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
