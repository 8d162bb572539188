"""The issue's promise, end to end on the platform `dexorder up` runs: a person sets a
price alert and a resting paper limit order, their agent exits idle (code 42) for all
that, the price crosses (trades at the exchange emulator → ingestor → Kafka → the stream
runner, which evaluates people's rules), the alert reaches their web socket, and the
order is filled in their paper account when they next look — one alert, one fill."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform
from tests.gateway.served import ChatSocket

pytestmark = pytest.mark.integration


@pytest.fixture
def up(tmp_path: Path) -> Iterator[RunningPlatform]:
    env = ephemeral_env(
        tmp_path / "home",
        DEXORDER_GATEWAY__ENABLED="true",
        DEXORDER_AGENT__IDLE_TIMEOUT_S=json.dumps({"free": 4, "pro": 60, "enterprise": None}),
        DEXORDER_STREAM__CHECKPOINT_INTERVAL_MS="200",
    )
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS",)):
        parts = {"kafka", "exchange-emulator", "relay", "ingestor-binance", "stream"}
        p = start_platform(env, only=parts | {"gateway", "triggers"})  # no lake writer
        try:
            yield p
        finally:
            p.stop()


async def trade(http: aiohttp.ClientSession, p: RunningPlatform, price: float) -> None:
    body = {"symbol": "BTCUSDT", "price": price, "qty": 0.5}
    async with http.post(f"{p.cfg.emulator_url}/emulator/trades", json=body) as r:
        assert r.status == 200, await r.text()


async def trade_until(
    http: aiohttp.ClientSession,
    p: RunningPlatform,
    ws: ChatSocket,
    price: float,
    kinds: set[str],
    timeout: float = 90,
) -> list[dict[str, Any]]:
    """Trade at ``price`` (again and again: the ingestor may still be connecting) until
    event frames of every kind in ``kinds`` reached the socket; all event frames seen."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not kinds <= {f["kind"] for f in seen}:
            await trade(http, p, price)
            try:
                frame = await ws.next(timeout=1.0)
            except TimeoutError:
                continue
            if frame["type"] == "event":
                seen.append(frame)
    return seen


async def agent_state(http: aiohttp.ClientSession, base: str, token: str) -> str:
    async with http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}) as r:
        return str((await r.json())["agent"])


async def test_an_alert_and_a_limit_order_fire_while_the_agent_sleeps(up: RunningPlatform) -> None:
    base = up.cfg.gateway.url
    async with aiohttp.ClientSession() as http:
        body = {"email": "a@example.com", "password": "long enough pw"}
        async with http.post(f"{base}/api/auth/signup", json=body) as r:
            token = (await r.json())["access_token"]
        async with http.ws_connect(base.replace("http", "ws") + "/api/chat/ws") as raw:
            await raw.send_str(json.dumps({"type": "auth", "token": token}))
            ws = ChatSocket(raw)
            assert (await ws.next())["type"] == "ready"

            frames = await ws.ask("set an alert when BTC goes above 61,000")
            assert "Alert set" in frames[-1]["text"], frames[-1]
            frames = await ws.ask("buy 0.1 BTC/USDT limit 30000")
            assert any(f["type"] == "confirm" for f in frames), frames
            frames = await ws.ask("yes")
            assert any(
                f["type"] == "tool" and f["name"] == "execute_trade" and f["state"] == "done"
                for f in frames
            ), frames

            # nothing but calls keeps the agent awake: it exits idle (code 42)
            async with asyncio.timeout(60):
                while await agent_state(http, base, token) != "idle":
                    await asyncio.sleep(0.2)

            alerts = await trade_until(http, up, ws, 62_000, {"alert"})
            fills = await trade_until(http, up, ws, 29_000, {"fill"})
            with pytest.raises(TimeoutError):  # nothing comes twice
                while True:
                    frame = await ws.next(timeout=3.0)
                    if frame["type"] == "event":
                        fills.append(frame)
            events = alerts + fills
            assert [f["kind"] for f in events if f["kind"] == "alert"] == ["alert"]
            (alert,) = [f for f in events if f["kind"] == "alert"]
            assert alert["event_id"].startswith("rule:alert-")
            assert "went above 61000" in alert["text"]
            (fill,) = [f for f in events if f["kind"] == "fill"]
            # a limit buy fills at its level, or at the tick's price when that is better
            assert fill["payload"]["quantity"] == 0.1 and fill["payload"]["price"] == 29_000

            # the agent woken to apply the fill sleeps again; when they next look, the order
            # is filled in their paper account
            async with asyncio.timeout(60):
                while await agent_state(http, base, token) != "idle":
                    await asyncio.sleep(0.2)
            frames = await ws.ask("show my positions")
            reply = frames[-1]["text"]
            assert "- BINANCE:BTC/USDT: 0.1 (" in reply, reply
            cash = 10_000 - 0.1 * fill["payload"]["price"] * 1.001
            assert f"Cash {cash:,.2f}" in reply, reply
