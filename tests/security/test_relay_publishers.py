"""Threat: anything that reaches the relay's XSUB port publishes market data or history.

A person's code on the same machine (or any pod in the cluster) could connect a PUB
socket to the relay and send a fake candle — every chart, alert and paper fill would see
it — or a fake ``HISTORY_READY`` that ends someone's backfill with a lie. The relay's
XSUB lets in only the CURVE keys of the platform's own publishing parts.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import zmq
import zmq.asyncio

from dexorder.client import backfill
from dexorder.relay_keys import (
    PUBLISHERS,
    CurveKeypair,
    RelayPublisher,
    connect_publisher,
    connect_subscriber,
    publisher,
    server_public_key,
)
from dexorder.schemas import Candle, HistoryReady, decode, encode
from dexorder.topics import history_ready_topic, ohlc_topic
from launcher.ephemeral import RunningPlatform, start_platform

pytestmark = pytest.mark.integration

TICKER = "BINANCE:BTC/USDT"
FAKE_PRICE = 31_337.0
REAL_PRICE = 12_345.5
D0 = 1_704_067_200_000  # 2024-01-01
HOUR = 3_600_000


def relay_stats(p: RunningPlatform) -> dict[str, int]:
    with urllib.request.urlopen(p.part("relay").probe, timeout=2) as r:
        data: dict[str, int] = json.loads(r.read())
        return data


def fake_candle() -> bytes:
    now = int(time.time() * 1000) // 60_000 * 60_000
    return encode(
        Candle(
            exchange="BINANCE",
            symbol="BTC/USDT",
            timeframe="1m",
            open_time=now,
            open=FAKE_PRICE,
            high=FAKE_PRICE,
            low=FAKE_PRICE,
            close=FAKE_PRICE,
            volume=1.0,
            trades=1,
            closed=False,
        )
    )


def forged_publishers(p: RunningPlatform) -> list[zmq.asyncio.Socket]:
    """An attacker's publishers: one with no key, one with its own key (knowing the relay's)."""
    ctx = zmq.asyncio.Context.instance()
    plain, keyed = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
    for s in (plain, keyed):
        s.setsockopt(zmq.LINGER, 0)
    cfg = p.cfg
    xsub = f"tcp://{cfg.relay.host}:{cfg.relay.xsub_port}"
    plain.connect(xsub)
    own = zmq.curve_keypair()
    connect_publisher(keyed, RelayPublisher(xsub, server_public_key(cfg), CurveKeypair(*own)))
    return [plain, keyed]


async def trade(p: RunningPlatform, price: float) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{p.cfg.emulator_url}/emulator/trades",
            json={"symbol": "BTCUSDT", "price": price, "qty": 0.5},
        )
        assert r.status == 200, await r.text()


async def test_a_forged_publisher_reaches_no_subscriber_while_real_data_flows(
    shared_platform: RunningPlatform,
) -> None:
    """Stops a fake candle and a fake HISTORY_READY published by someone without a part's key."""
    p = shared_platform
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, ohlc_topic(TICKER, "1m").encode())
    sub.setsockopt(zmq.SUBSCRIBE, b"HISTORY_READY:")
    connect_subscriber(sub, p.cfg)
    forged = forged_publishers(p)
    victim = history_ready_topic("victim-request").encode()
    lie = encode(HistoryReady(request_id="victim-request", ticker=TICKER, timeframe="1h", rows=0))
    seen: list[tuple[bytes, object]] = []
    stop = asyncio.Event()

    async def attack() -> None:
        while not stop.is_set():
            for pub in forged:
                await pub.send_multipart([ohlc_topic(TICKER, "1m").encode(), fake_candle()])
                await pub.send_multipart([victim, lie])
            await asyncio.sleep(0.02)

    async def listen() -> None:
        while True:
            topic, payload = await sub.recv_multipart()
            seen.append((topic, decode(payload)))

    attacking, listening = asyncio.create_task(attack()), asyncio.create_task(listen())
    try:
        # the real parts keep publishing: a trade becomes a candle (ingestor → stream
        # runner), a backfill ends in HISTORY_READY (lake writer) with progress (ingestor)
        progress: list[tuple[int, int]] = []
        ready = await backfill(
            TICKER,
            "1h",
            D0,
            D0 + 6 * HOUR,
            config=p.cfg,
            timeout_s=90,
            on_progress=lambda f, t: progress.append((f, t)),
        )
        assert ready.error is None and ready.rows == 6, ready
        assert progress and progress[-1] == (6, 6)
        deadline = time.monotonic() + 90
        while not any(isinstance(m, Candle) and m.close == REAL_PRICE for _, m in seen):
            assert time.monotonic() < deadline, "no real candle reached the subscriber"
            await trade(p, REAL_PRICE)
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)  # the attack goes on a while after the real data arrived
    finally:
        stop.set()
        await attacking
        listening.cancel()
        for s in (sub, *forged):
            s.close(linger=0)
    assert [m for _, m in seen if isinstance(m, Candle) and m.close == FAKE_PRICE] == []
    assert [t for t, _ in seen if t == victim] == []
    stats = relay_stats(p)
    assert stats["refused_publishers"] >= 1  # the keyed forger, by its key


@pytest.fixture
def keyed_subscribers_relay(
    isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningPlatform]:
    monkeypatch.setenv("DEXORDER_RELAY__CURVE_SUBSCRIBERS", "true")
    p = start_platform({**isolated_env, "DEXORDER_RELAY__CURVE_SUBSCRIBERS": "true"}, {"relay"})
    try:
        yield p
    finally:
        p.stop()


async def test_subscribers_need_a_key_when_the_cluster_switch_is_on(
    keyed_subscribers_relay: RunningPlatform,
) -> None:
    """Stops an outsider reading the fanout where subscribers must hold a key (the cluster)."""
    p = keyed_subscribers_relay
    cfg = p.cfg
    assert cfg.relay.curve_subscribers
    ctx = zmq.asyncio.Context.instance()
    keyed, plain, own_key = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    for s in (keyed, plain, own_key):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"BINANCE:")
    connect_subscriber(keyed, cfg)
    xpub = f"tcp://{cfg.relay.host}:{cfg.relay.xpub_port}"
    plain.connect(xpub)
    public, secret = zmq.curve_keypair()
    own_key.setsockopt(zmq.CURVE_SERVERKEY, server_public_key(cfg))
    own_key.setsockopt(zmq.CURVE_PUBLICKEY, public)
    own_key.setsockopt(zmq.CURVE_SECRETKEY, secret)
    own_key.connect(xpub)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    connect_publisher(pub, publisher(cfg, "stream"))
    try:
        for _ in range(200):
            await pub.send_multipart([b"BINANCE:BTC/USDT|tick", b"probe"])
            if await keyed.poll(50):
                break
        assert await keyed.poll(1000), "the keyed subscriber got nothing"
        deadline = time.monotonic() + 10
        while relay_stats(p)["refused_subscribers"] < 1:  # the own-key outsider, by its key
            assert time.monotonic() < deadline, "the relay never judged the outsider's key"
            await asyncio.sleep(0.05)
        for _ in range(20):  # keep publishing: the outsiders had every chance to join
            await pub.send_multipart([b"BINANCE:BTC/USDT|tick", b"probe"])
        assert not await plain.poll(500)
        assert not await own_key.poll(100)
    finally:
        for s in (keyed, plain, own_key, pub):
            s.close(linger=0)


def test_the_agent_never_loads_a_relay_key_beyond_a_subscribers() -> None:
    """Stops a person's agent (and so its sandbox) from holding a key that publishes."""
    agent_dir = Path(__file__).resolve().parents[2] / "mcp-agent" / "agent"
    allowed = {"connect_subscriber"}
    for path in agent_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "dexorder.relay_keys":
                names = {a.name for a in node.names}
                assert names <= allowed, f"{path} imports {names - allowed}"
            if isinstance(node, ast.Import):
                assert "dexorder.relay_keys" not in {a.name for a in node.names}, path
    assert set(PUBLISHERS) == {"stream", "lake-writer", "ingestor"}
