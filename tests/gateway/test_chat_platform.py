"""A WebSocket chat against the whole platform: prices from the exchange, candles through
the history path, a paper order confirmed in the chat, and its fill arriving as an event."""

from __future__ import annotations

import asyncio

import pytest

from launcher.ephemeral import RunningPlatform
from services.exchange_emulator.account import TEST_API_KEY, TEST_API_SECRET
from tests.agent.test_paper_trading import trading_until
from tests.gateway.served import run_cli, serve_gateway
from tests.integration.test_realtime_path import trade

pytestmark = pytest.mark.integration


async def test_prices_candles_and_a_confirmed_paper_order_with_its_fill_event(
    platform: RunningPlatform,
) -> None:
    async with serve_gateway(platform.cfg) as s:
        alice = await s.sign_up("alice@example.com")
        async with s.socket(alice["access_token"]) as ws:
            await trade(platform, "BTCUSDT", 64_321.5, 0.01)
            frames = await ws.ask("price of BTC")
            assert "BINANCE:BTC/USDT last traded at 64,321.50" in frames[-1]["text"]

            frames = await ws.ask("candles of BTC on 1h from 2024-01-01 to 2024-01-03")
            candles = next(f for f in frames if f["type"] == "candles")
            assert candles["ticker"] == "BINANCE:BTC/USDT" and len(candles["candles"]) == 48
            assert "count 48" in frames[-1]["text"]

            frames = await ws.ask("buy 0.1 BTC on paper")
            assert frames[-1]["type"] == "reply" and "Please confirm" in frames[-1]["text"]
            # fills need live prices: trade at the exchange until the reply
            frames = await trading_until(
                platform, 100.0, asyncio.ensure_future(ws.ask("yes", timeout=120))
            )
            tools = [(f["name"], f["state"]) for f in frames if f["type"] == "tool"]
            assert tools == [("execute_trade", "start"), ("execute_trade", "done")]
            assert "Order placed" in frames[-1]["text"]
            events = [f for f in frames if f["type"] == "event"]
            if not events:
                events = [await ws.until("event")]
            assert (
                events[0]["kind"] == "fill"
                and "Filled: buy 0.1 BINANCE:BTC/USDT" in events[0]["text"]
            )

            frames = await ws.ask("show my positions")
            assert "BINANCE:BTC/USDT: 0.1" in frames[-1]["text"]

            # live: the chat's "yes", then the code sent only to the person's channel
            live = {
                **platform.env,
                "DEXORDER_LIVE_API_KEY": TEST_API_KEY,
                "DEXORDER_LIVE_API_SECRET": TEST_API_SECRET,
            }
            user = alice["account"]["id"]
            args = ("live", "--user", user, "--enable", "--per-order", "500", "--per-day", "900")
            code, _, errs = await run_cli(live, *args)
            assert code == 0, errs
            frames = await ws.ask("buy 1 BTC live")
            assert "Please confirm: buy 1.0 BINANCE:BTC/USDT (market, live)" in frames[-1]["text"]
            frames = await trading_until(
                platform, 100.0, asyncio.ensure_future(ws.ask("yes", timeout=120))
            )
            assert "a six-digit code was sent to your channel" in frames[-1]["text"]
            sent = next((f for f in frames if f["type"] == "event"), None)
            sent = sent or await ws.until("event")
            assert sent["kind"] == "trade_confirmation"
            code_sent = str(sent["payload"]["code"])
            assert code_sent not in frames[-1]["text"]  # the model's side never sees it
            frames = await ws.ask(f"confirm {code_sent}")
            assert "Live order placed: buy 1.0 BINANCE:BTC/USDT at 100" in frames[-1]["text"]
            fill = next((f for f in frames if f["type"] == "event"), None)
            fill = fill or await ws.until("event")
            assert fill["kind"] == "fill" and fill["payload"]["mode"] == "live"
        assert s.gw.events.stats["delivered"] >= 1
