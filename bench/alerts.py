"""Tick → fired alert at a person's web socket, with the local stream runner, on loopback.

The platform ``dexorder up`` runs (no lake writer), in a temporary home. One person with
an open chat WebSocket has price alerts ``above`` rising levels, registered as their agent
would (``PUT /internal/rules`` with a token for them; no agent needs to run). Each round
makes one trade at the exchange emulator just over the next level: it travels through
CCXT, the ingestor, Kafka ``market.ticks`` and the stream runner, which fires the alert
to Kafka ``notifications``; the trigger dispatcher hands it to the notification fanout,
the gateway delivers it to the socket. Latency runs from just before the trade is made
to the socket's ``event`` frame.

The baseline in the same run is the same trade to a relay subscriber (the 1m candle
update whose close is that trade's price): what the alert path adds is the Kafka round
trip of the notification, the dispatcher's delivery and the gateway.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
import zmq
import zmq.asyncio

from bench.common import pct, row
from dexorder.client import request
from dexorder.contracts.rules import PriceCross, Rule
from dexorder.schemas import RealtimeRequest, decode_candle
from dexorder.tokens import mint_token, token_keys
from dexorder.topics import ohlc_topic
from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform

TICKER = "BINANCE:BTC/USDT"
BASE = 60_000.0  # above the emulator's simulated market: only our trades cross
STEP = 10.0
ROUNDS = 90  # with the warm-up, within the 100 active alerts a person may have
WARMUP = 5


async def _trade(http: aiohttp.ClientSession, url: str, price: float) -> None:
    body = {"symbol": "BTCUSDT", "price": price, "qty": 0.01}
    async with http.post(f"{url}/emulator/trades", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"the emulator refused a trade: {await r.text()}")


async def _run(home: Path) -> dict[str, float]:
    env = ephemeral_env(home, DEXORDER_GATEWAY__ENABLED="true")
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS",)):
        parts = {"kafka", "exchange-emulator", "relay", "ingestor-binance", "stream"}
        p = await asyncio.to_thread(start_platform, env, parts | {"gateway", "triggers"})
    try:
        return await _measure(p)
    finally:
        await asyncio.to_thread(p.stop)


async def _measure(p: RunningPlatform) -> dict[str, float]:
    cfg = p.cfg
    base, emulator = cfg.gateway.url, cfg.emulator_url
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, ohlc_topic(TICKER, "1m").encode())
    sub.connect(cfg.relay.xpub_address)
    await request(cfg.relay.router_address, RealtimeRequest(ticker=TICKER))
    async with aiohttp.ClientSession() as http:
        body = {"email": "bench@example.com", "password": "long enough pw"}
        async with http.post(f"{base}/api/auth/signup", json=body) as r:
            signed = await r.json()
        user, session = signed["account"]["id"], signed["access_token"]
        agent_token = mint_token(token_keys(cfg), user)  # what their agent would hold
        levels = [BASE + i * STEP for i in range(WARMUP + ROUNDS)]
        now = int(time.time() * 1000)
        for i, level in enumerate(levels):
            rule = Rule(
                id=f"alert-bench-{i}",
                user=user,
                ticker=TICKER,
                condition=PriceCross(direction="above", level=level),
                created_at=now,
            )
            async with http.put(
                f"{base}/internal/rules/{rule.id}",
                data=msgspec.json.encode(rule),
                headers={"Authorization": f"Bearer {agent_token}"},
            ) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"the gateway refused a rule: {await r.text()}")
        async with http.ws_connect(base.replace("http", "ws") + "/api/chat/ws") as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": session}))
            await ws.receive(timeout=30)  # ready
            to_socket: list[float] = []
            to_relay: list[float] = []
            missed = 0
            for i, level in enumerate(levels):
                price = level + STEP / 2
                if i < WARMUP:  # the ingestor may still connect: trade until it is seen
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        await _trade(http, emulator, price)
                        try:
                            msg = await ws.receive(timeout=1.0)
                        except TimeoutError:
                            continue
                        if json.loads(msg.data).get("type") == "event":
                            break
                    continue
                while await sub.poll(0):  # candles of earlier trades
                    await sub.recv_multipart()
                t0 = time.monotonic()
                await _trade(http, emulator, price)
                relay_ms = socket_ms = None
                end = t0 + 10
                while socket_ms is None and time.monotonic() < end:
                    if relay_ms is None and await sub.poll(0):
                        _, data = await sub.recv_multipart()
                        if decode_candle(data).close == price:
                            relay_ms = (time.monotonic() - t0) * 1000
                        continue
                    try:
                        msg = await ws.receive(timeout=0.002)
                    except TimeoutError:
                        continue
                    frame = json.loads(msg.data)
                    if (
                        frame.get("type") == "event"
                        and frame["event_id"] == f"rule:alert-bench-{i}"
                    ):
                        socket_ms = (time.monotonic() - t0) * 1000
                if socket_ms is None:
                    missed += 1
                else:
                    to_socket.append(socket_ms)
                if relay_ms is not None:
                    to_relay.append(relay_ms)
    sub.close()
    return {
        "relay_p50_ms": pct(to_relay, 50),
        "relay_p99_ms": pct(to_relay, 99),
        "alert_p50_ms": pct(to_socket, 50),
        "alert_p99_ms": pct(to_socket, 99),
        "alerts_missed": float(missed),
        "rounds": float(ROUNDS),
    }


def main() -> dict[str, float]:
    print(f"alerts: trade → fired alert at a web socket, {ROUNDS} alerts, local runner")
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_run(Path(tmp) / "home"))
    row(
        "baseline: trade → candle at a relay subscriber",
        f"p50 {r['relay_p50_ms']:.1f} ms",
        f"p99 {r['relay_p99_ms']:.1f} ms",
    )
    row(
        "trade → alert at the person's web socket",
        f"p50 {r['alert_p50_ms']:.1f} ms",
        f"p99 {r['alert_p99_ms']:.1f} ms",
    )
    row("alerts not seen within 10 s", f"{r['alerts_missed']:.0f} of {r['rounds']:.0f}")
    return r


if __name__ == "__main__":
    main()
