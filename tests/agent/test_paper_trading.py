"""Paper trading through the whole platform: trades at the exchange → candles → fills → events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TypeVar

import pytest

from agent.person import PersonAgent
from dexorder.config import Settings
from launcher.ephemeral import RunningPlatform, free_port
from tests.agent.conftest import serve_agent
from tests.agent.test_events import Gateway
from tests.agent.test_mcp_server import data
from tests.integration.test_realtime_path import trade

pytestmark = pytest.mark.integration

BTC = "BINANCE:BTC/USDT"
T = TypeVar("T")


def with_gateway(p: RunningPlatform, gateway: str) -> Settings:
    return p.cfg.model_copy(
        update={"agent": p.cfg.agent.model_copy(update={"gateway_events": gateway})}
    )


async def trading_until(p: RunningPlatform, price: float, done: asyncio.Future[T]) -> T:
    """Trade BTC at ``price`` at the emulator until ``done`` finishes (prices take a moment)."""
    for _ in range(240):
        await trade(p, "BTCUSDT", price, 0.5)
        finished, _ = await asyncio.wait({done}, timeout=0.25)
        if finished:
            return done.result()
    raise AssertionError("timed out")


async def test_orders_fill_against_live_candles_and_fills_reach_the_gateway(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    gateway = Gateway(endpoint)
    try:
        async with serve_agent(with_gateway(platform, endpoint)) as agent, agent.client() as c:
            buy = asyncio.ensure_future(
                c.call_tool("execute_trade", {"ticker": BTC, "side": "buy", "quantity": 0.1})
            )
            bought = data(await trading_until(platform, 100.0, buy))
            assert bought["fill"]["price"] == pytest.approx(100.0 * 1.0005)

            limit = data(
                await c.call_tool(
                    "execute_trade",
                    {
                        "ticker": BTC,
                        "side": "buy",
                        "quantity": 0.1,
                        "order_type": "limit",
                        "limit_price": 90,
                    },
                )
            )
            assert limit["fill"] is None
            order_id = limit["order"]["id"]

            def filled() -> bool:
                return any(
                    e.kind == "fill" and e.payload["order_id"] == order_id for e in gateway.received
                )

            waiter = asyncio.ensure_future(gateway.until(filled, timeout=60))
            await trading_until(platform, 89.0, waiter)
            fill = next(
                e
                for e in gateway.received
                if e.kind == "fill" and e.payload["order_id"] == order_id
            )
            assert fill.critical and fill.user == "alice" and fill.payload["price"] == 90

            alert = data(
                await c.call_tool("set_alert", {"ticker": BTC, "condition": "above", "price": 120})
            )
            waiter = asyncio.ensure_future(
                gateway.until(lambda: any(e.kind == "alert" for e in gateway.received), timeout=60)
            )
            await trading_until(platform, 125.0, waiter)
            (fired,) = [e for e in gateway.received if e.kind == "alert"]
            price = fired.payload["triggered_price"]
            assert fired.payload["id"] == alert["id"]
            assert isinstance(price, int | float) and price >= 120

            positions = data(await c.call_tool("get_positions", {}))
            assert positions["positions"][0]["quantity"] == pytest.approx(0.2)
            assert positions["open_orders"] == []
        # the account survives a restart of the agent
        again = PersonAgent(agent.cfg, "alice")
        assert again.broker.book.summary()["positions"][0]["quantity"] == pytest.approx(0.2)  # type: ignore[index]
        assert json.loads((again.state_dir / "paper.json").read_text())["fills"][0]["side"] == "buy"
    finally:
        await gateway.close()
