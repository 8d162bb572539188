"""Live trading: off by default, limits, and a confirmation the calling agent cannot skip.

Orders go through unmodified CCXT to the exchange emulator's signed Binance API.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp
import pytest

from launcher.ephemeral import RunningPlatform, free_port
from services.exchange_emulator.account import TEST_API_KEY, TEST_API_SECRET
from tests.agent.conftest import first_text, serve_agent
from tests.agent.test_events import Gateway
from tests.agent.test_mcp_server import data, error
from tests.agent.test_paper_trading import trading_until, with_gateway

pytestmark = pytest.mark.integration

BTC = "BINANCE:BTC/USDT"


def dexorder_live(env_of: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **env_of,
        "DEXORDER_LIVE_API_KEY": TEST_API_KEY,
        "DEXORDER_LIVE_API_SECRET": TEST_API_SECRET,
    }
    return subprocess.run(
        [sys.executable, "-m", "launcher", "live", "--user", "alice", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_live_orders_need_the_persons_code_and_stay_within_limits(
    platform: RunningPlatform,
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    gateway = Gateway(endpoint)
    order = {"ticker": BTC, "side": "buy", "quantity": 1.0, "mode": "live"}
    try:
        async with serve_agent(with_gateway(platform, endpoint)) as agent, agent.client() as c:
            assert "live trading is off" in error(await c.call_tool("execute_trade", order))

            on = dexorder_live(platform.env, "--enable", "--per-order", "150", "--per-day", "180")
            assert on.returncode == 0, on.stderr
            assert "live trading for alice: on" in on.stdout and "keys set" in on.stdout

            asked = asyncio.ensure_future(c.call_tool("execute_trade", order))
            result = await trading_until(platform, 100.0, asked)
            text = first_text(result)
            parked = data(result)
            assert parked["status"] == "awaiting_confirmation"

            def confirmation() -> bool:
                return any(e.kind == "trade_confirmation" for e in gateway.received)

            await gateway.until(confirmation)
            sent = next(e for e in gateway.received if e.kind == "trade_confirmation")
            code = str(sent.payload["code"])
            assert sent.payload["confirmation_id"] == parked["confirmation_id"]
            assert code not in text  # the caller never sees the code

            wrong = "000000" if code != "000000" else "111111"
            confirm = {"confirmation_id": parked["confirmation_id"]}
            assert "wrong code (4 attempts left)" in error(
                await c.call_tool("confirm_trade", {**confirm, "code": wrong})
            )
            assert "String should match pattern" in error(
                await c.call_tool("confirm_trade", {**confirm, "code": "12"})
            )
            # the one order waiting needs no id
            placed = data(await c.call_tool("confirm_trade", {"code": code}))
            assert placed["status"] == "placed" and placed["order"]["status"] == "closed"
            assert placed["order"]["price"] == pytest.approx(100.0)
            assert "no such confirmation" in error(
                await c.call_tool("confirm_trade", {**confirm, "code": code})
            )  # a code works once
            assert "no live order waits" in error(
                await c.call_tool("confirm_trade", {"code": code})
            )

            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{platform.cfg.emulator_url}/emulator/accounts") as r,
            ):
                account = (await r.json())[TEST_API_KEY]
            assert account["balances"]["BTC"] == pytest.approx(2.0)
            assert [o["side"] for o in account["orders"]] == ["BUY"]
            await gateway.until(
                lambda: any(
                    e.kind == "fill" and e.payload["mode"] == "live" for e in gateway.received
                )
            )

            too_big = {**order, "quantity": 2.0}
            assert "over the per-order limit of 150.00" in error(
                await c.call_tool("execute_trade", too_big)
            )
            assert "over the daily limit of 180.00 (100.00 used)" in error(
                await c.call_tool("execute_trade", order)
            )
            off = dexorder_live(platform.env, "--disable")
            assert off.returncode == 0 and "off" in off.stdout
            assert "live trading is off" in error(await c.call_tool("execute_trade", order))
    finally:
        await gateway.close()


def test_the_live_command_refuses_bad_input(isolated_env: dict[str, str]) -> None:
    bad = dexorder_live(isolated_env, "--enable", "--per-order", "500", "--per-day", "100")
    assert bad.returncode == 2 and "--per-day must be at least --per-order" in bad.stderr
    bad = dexorder_live(isolated_env, "--enable", "--user", "../bob")
    assert bad.returncode == 2 and "invalid user id" in bad.stderr and "Traceback" not in bad.stderr
