"""Unmodified CCXT against the exchange emulator, with only its URLs changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ccxt
import pytest
from aiohttp import web

from dexorder.exchanges import make_exchange
from launcher.ephemeral import free_port
from services.exchange_emulator.server import EmulatorState, build_app
from services.exchange_emulator.simulator import MarketSimulator

NOW = 1_790_000_000.0  # a fixed clock: 2026-09
#: a CCXT exchange: ccxt ships no types (ignore_missing_imports), make_exchange gives Any
Exchange = Any


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[str, EmulatorState]]:
    state = EmulatorState(MarketSimulator(trade_rate=0), weight_limit=400, clock=lambda: NOW)
    runner = web.AppRunner(build_app(state))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


@pytest.fixture
async def exchange(emulator: tuple[str, EmulatorState]) -> AsyncIterator[Exchange]:
    ex = make_exchange("binance", emulator[0], enableRateLimit=False)
    yield ex
    await ex.close()


async def test_markets(exchange: Exchange) -> None:
    markets = await exchange.load_markets()
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert btc["spot"] and btc["active"] and btc["precision"]["price"] == 0.01


async def test_klines_pagination(exchange: Exchange) -> None:
    start = int(NOW * 1000) - 2500 * 60_000
    start -= start % 60_000
    first = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=start, limit=1000)
    assert len(first) == 1000 and first[0][0] == start
    second = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=first[-1][0] + 60_000, limit=1000)
    assert second[0][0] == first[-1][0] + 60_000
    assert second[0][1] == pytest.approx(first[-1][4])  # continuous prices across pages
    last = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=second[-1][0] + 60_000, limit=1000)
    assert len(last) == 501  # up to the current (open) minute, nothing from the future
    assert last[-1][0] == int(NOW * 1000) - int(NOW * 1000) % 60_000


async def test_two_year_old_history(exchange: Exchange) -> None:
    since = int(NOW * 1000) - 2 * 365 * 86_400_000
    rows = await exchange.fetch_ohlcv("BTC/USDT", "1d", since=since, limit=10)
    assert len(rows) == 10 and all(r[2] >= r[3] > 0 for r in rows)


async def test_unknown_symbol_and_bad_interval(
    emulator: tuple[str, EmulatorState], exchange: Exchange
) -> None:
    await exchange.load_markets()
    async with aiohttp.ClientSession() as s:
        r = await s.get(
            f"{emulator[0]}/api/v3/klines", params={"symbol": "NOPEUSDT", "interval": "1m"}
        )
        assert r.status == 400 and await r.json() == {"code": -1121, "msg": "Invalid symbol."}
        r = await s.get(
            f"{emulator[0]}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "7m"}
        )
        assert r.status == 400 and (await r.json())["code"] == -1120
        r = await s.get(f"{emulator[0]}/api/v3/klines", params={"symbol": "BTCUSDT"})
        assert r.status == 400 and (await r.json())["code"] == -1102
        r = await s.get(
            f"{emulator[0]}/api/v3/klines",
            params={"symbol": "BTCUSDT", "interval": "1m", "limit": "5000"},
        )
        assert r.status == 400 and (await r.json())["code"] == -1130
    with pytest.raises(ccxt.BadSymbol):
        await exchange.fetch_ohlcv("NOPE/USDT", "1m")


async def test_rate_limit(emulator: tuple[str, EmulatorState], exchange: Exchange) -> None:
    await exchange.load_markets()
    with pytest.raises(ccxt.DDoSProtection):  # CCXT's class for Binance's HTTP 429
        for _ in range(300):  # weight 2 each against a 400 limit
            await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{emulator[0]}/api/v3/ping")
        assert r.status == 429 and "Retry-After" in r.headers
        assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) > 400


async def test_websocket_trades(emulator: tuple[str, EmulatorState], exchange: Exchange) -> None:
    await exchange.load_markets()
    watch = asyncio.ensure_future(exchange.watch_trades("SOL/USDT"))
    async with aiohttp.ClientSession() as s:
        for _ in range(100):  # until CCXT has subscribed
            stats = await (await s.get(f"{emulator[0]}/emulator/stats")).json()
            if "solusdt@trade" in stats["subscriptions"]:
                break
            await asyncio.sleep(0.05)
        r = await s.post(
            f"{emulator[0]}/emulator/trades", json={"symbol": "SOL/USDT", "price": 101.25, "qty": 3}
        )
        assert r.status == 200
    trades = await asyncio.wait_for(watch, 10)
    assert trades[-1]["price"] == 101.25 and trades[-1]["amount"] == 3
    assert trades[-1]["symbol"] == "SOL/USDT"


async def test_ccxt_reads_the_ticker_with_the_last_trade_as_its_price(
    emulator: tuple[str, EmulatorState], exchange: Exchange
) -> None:
    before = await exchange.fetch_ticker("SOL/USDT")
    assert before["last"] > 0 and before["low"] <= before["last"] <= before["high"]
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{emulator[0]}/emulator/trades", json={"symbol": "SOL/USDT", "price": 77.5, "qty": 1}
        )
        assert r.status == 200
    after = await exchange.fetch_ticker("SOL/USDT")
    assert after["last"] == 77.5 and after["symbol"] == "SOL/USDT"
    with pytest.raises(ccxt.BadSymbol):
        await exchange.fetch_ticker("NOPE/USDT")


async def test_control_api_rejects_bad_input(emulator: tuple[str, EmulatorState]) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{emulator[0]}/emulator/trades", data=b"nope")
        assert r.status == 400
        r = await s.post(f"{emulator[0]}/emulator/trades", json={"symbol": "BTCUSDT"})
        assert r.status == 400 and "price" in (await r.json())["error"]


async def test_the_signed_account_api_speaks_to_ccxt() -> None:
    from services.exchange_emulator.account import TEST_API_KEY, TEST_API_SECRET

    state = EmulatorState(MarketSimulator(trade_rate=0), weight_limit=6000)
    runner = web.AppRunner(build_app(state))
    await runner.setup()
    url = f"http://127.0.0.1:{free_port()}"
    await web.TCPSite(runner, "127.0.0.1", int(url.rsplit(":", 1)[1])).start()

    def client(api_key: str, secret: str) -> Exchange:
        return make_exchange("binance", url, enableRateLimit=False, apiKey=api_key, secret=secret)

    good = client(TEST_API_KEY, TEST_API_SECRET)
    wrong_secret = client(TEST_API_KEY, "not-it")
    unknown_key = client("nobody", "x")
    try:
        balance = await good.fetch_balance()
        assert balance["total"]["USDT"] == 100_000 and balance["total"]["BTC"] == 1
        order = await good.create_order("ETH/USDT", "market", "buy", 1)
        assert order["status"] == "closed" and order["filled"] == 1 and order["average"] > 0
        assert (await good.fetch_balance())["total"]["ETH"] == 1
        resting = await good.create_order("ETH/USDT", "limit", "buy", 1, 100.0)
        assert resting["status"] == "open"
        with pytest.raises(ccxt.InsufficientFunds):
            await good.create_order("BTC/USDT", "market", "buy", 100)
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await wrong_secret.create_order("BTC/USDT", "market", "buy", 0.01)
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await unknown_key.fetch_balance()
        with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
            await good.create_order("BTC/USDT", "market", "buy", 0.00001)
    finally:
        for ex in (good, wrong_secret, unknown_key):
            await ex.close()
        await runner.cleanup()
