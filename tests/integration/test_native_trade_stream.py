"""The ingestor's native Binance trade stream against CCXT's, over the exchange emulator.

The fast path must give the very ticks CCXT's ``watch_trades`` gives (ids, sides,
prices parsed from Binance's decimal strings), drop what CCXT's path drops, and
after a reconnect fill the gap from REST as the CCXT path does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from dexorder.exchanges import make_exchange
from dexorder.schemas import Tick, decode
from dexorder.topics import MARKET_TICKS
from launcher.ephemeral import free_port
from services.exchange_emulator.server import EmulatorState, build_app
from services.exchange_emulator.simulator import MarketSimulator
from services.ingestor.binance_gap import GapFill, ccxt_fetch
from services.ingestor.binance_stream import connect, raw_messages, trade_stream_url
from services.ingestor.binance_trades import BinanceTradeDecoder, spot_symbols
from services.ingestor.service import Ingestor
from services.ingestor.trades import MalformedTrade, tick_from_ccxt

pytestmark = pytest.mark.integration


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[str, EmulatorState]]:
    state = EmulatorState(MarketSimulator(trade_rate=0), weight_limit=100_000)
    runner = web.AppRunner(build_app(state))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def _subscribers(url: str, stream: str, n: int) -> None:
    """Wait until ``n`` connections subscribe to ``stream`` at the emulator."""
    async with aiohttp.ClientSession() as s:
        # up to a minute: an ingestor process starting on a loaded machine (its imports
        # alone) took longer than the 15 s this once allowed
        for _ in range(1200):
            stats = await (await s.get(f"{url}/emulator/stats")).json()
            if stats["subscriptions"].get(stream, 0) >= n:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{n} subscribers of {stream} never came")


async def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{url}{path}", json=body)
        assert r.status == 200, await r.text()
        return await r.json()


async def test_native_stream_gives_the_ticks_ccxt_gives(
    emulator: tuple[str, EmulatorState],
) -> None:
    url, _ = emulator
    ex = make_exchange("binance", url, enableRateLimit=False)
    try:
        await ex.load_markets()
        # CCXT's number parsing is float() of the string Binance sends
        assert ex.safe_number({"q": "0.00100000"}, "q") == float("0.00100000") == 0.001
        decoder = BinanceTradeDecoder("BINANCE", spot_symbols(ex.markets.values()))
        stream_url = trade_stream_url(ex, "BTC/USDT")
        assert stream_url == f"{url.replace('http', 'ws')}/ws/btcusdt@trade"
        now = int(time.time() * 1000)
        shapes: list[dict[str, Any]] = [
            {"price": 50_000.1, "qty": 0.001, "buyer_is_maker": True},
            {"price": 0.30000001, "qty": 12.5, "buyer_is_maker": False},
            {"price": 123456.78901234, "qty": 0.00000001, "buyer_is_maker": True},
            {"price": 1e-8, "qty": 99999.99999999, "buyer_is_maker": False},
            {"price": 0.1 + 0.2, "qty": 1 / 3, "buyer_is_maker": False},
        ]
        trades = [
            {"symbol": "BTCUSDT", "time": now - 1000 + i, "id": 7_000_000 + i, **t}
            for i, t in enumerate(shapes * 4)
        ]
        n = len(trades)

        async def via_ccxt() -> list[Tick]:
            out: list[Tick] = []
            while len(out) < n:
                for t in await ex.watch_trades("BTC/USDT"):
                    out.append(tick_from_ccxt("BINANCE", t))
            return out

        async def via_native(ws: aiohttp.ClientWebSocketResponse) -> list[Tick]:
            out: list[Tick] = []
            async for raw in raw_messages(ws):
                out.append(decoder.tick(raw))
                if len(out) == n:
                    return out
            raise AssertionError("unreachable")

        async with aiohttp.ClientSession() as http, connect(http, stream_url) as ws:
            ccxt_task = asyncio.ensure_future(via_ccxt())
            await _subscribers(url, "btcusdt@trade", 2)
            native_task = asyncio.ensure_future(via_native(ws))
            await _post(url, "/emulator/trades", {"trades": trades})
            ccxt_ticks, native_ticks = await asyncio.wait_for(
                asyncio.gather(ccxt_task, native_task), 20
            )
        assert native_ticks == ccxt_ticks
        assert [t.trade_id for t in native_ticks] == [str(t["id"]) for t in trades]
        assert {t.side for t in native_ticks} == {"buy", "sell"}
        assert native_ticks[0].side == "sell"  # the buyer was the maker: a sell, as CCXT says

        # events CCXT's path drops, the native path drops too; good ones agree
        base = {"e": "trade", "E": now, "s": "BTCUSDT", "t": 1, "T": now, "m": True, "M": True}
        events = [
            {**base, "p": "0.00100000", "q": "1.00000000"},
            {**base, "p": "-1", "q": "1"},
            {**base, "p": "0", "q": "1"},
            {**base, "p": "nan", "q": "1"},
            {**base, "p": "inf", "q": "1"},
            {**base, "p": "abc", "q": "1"},
            {**base, "p": "1", "q": "0"},
            {**base, "p": "1", "q": "1", "T": now + 3_600_000},
            {**base, "p": "1", "q": "1", "T": 0},
            {**base, "p": "1", "q": "1", "s": "NOSUCHPAIR"},
            {**{k: v for k, v in base.items() if k != "m"}, "p": "2", "q": "3"},
        ]
        for event in events:
            market = ex.safe_market(event["s"], None, None, "spot")
            try:
                expected: Tick | None = tick_from_ccxt(
                    "BINANCE", ex.parse_ws_trade(dict(event), market)
                )
            except Exception:  # CCXT's own raise is counted as malformed too
                expected = None
            try:
                got: Tick | None = decoder.tick(json.dumps(event))
            except MalformedTrade:
                got = None
            assert got == expected, event
    finally:
        await ex.close()


async def _outage(url: str, ingestor: Ingestor, reconnects: int) -> None:
    """Take the emulator down and wait until the ingestor has seen its ``reconnects``-th
    lost connection."""
    await _post(url, "/emulator/down", {"down": True})
    for _ in range(300):
        if ingestor.counters["reconnects"] >= reconnects:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the ingestor never saw outage {reconnects}")


async def _ticks(consumer: AIOKafkaConsumer, n: int) -> list[Tick]:
    out: list[Tick] = []
    async with asyncio.timeout(30):
        while len(out) < n:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    tick = decode(rec.value)
                    assert isinstance(tick, Tick)
                    out.append(tick)
    return out


@contextlib.asynccontextmanager
async def _ingesting(
    url: str, kafka: str, native: bool | None = None
) -> AsyncIterator[tuple[Ingestor, AIOKafkaConsumer]]:
    """A running ingestor of BINANCE:BTC/USDT on the emulator at ``url``, once it has
    subscribed to the trade stream (``native``: its ``native_trade_stream``), and a consumer
    of everything it writes to market.ticks on ``kafka``."""
    ingestor = Ingestor(
        exchange_name="BINANCE",
        ccxt_id="binance",
        bootstrap=kafka,
        work_address=f"tcp://127.0.0.1:{free_port()}",
        symbols=["BTC/USDT"],
        emulator_url=url,
        native_trade_stream=native,
    )
    consumer = AIOKafkaConsumer(MARKET_TICKS, bootstrap_servers=kafka, auto_offset_reset="earliest")
    run = asyncio.ensure_future(ingestor.run())
    try:
        await _subscribers(url, "btcusdt@trade", 1)
        await consumer.start()
        yield ingestor, consumer
    finally:
        ingestor.stop()
        await asyncio.wait_for(run, 15)
        await consumer.stop()


async def test_native_stream_fills_the_gap_after_a_reconnect(
    emulator: tuple[str, EmulatorState], kafka: str
) -> None:
    url, _ = emulator
    async with _ingesting(url, kafka) as (ingestor, consumer):
        assert ingestor._native is not None  # the fast path serves the ticker
        now = int(time.time() * 1000)
        before = {"symbol": "BTCUSDT", "price": 100.0, "qty": 1, "id": 1, "time": now - 3000}
        await _post(url, "/emulator/trades", before)
        assert [t.trade_id for t in await _ticks(consumer, 1)] == ["1"]

        await _outage(url, ingestor, 1)
        # made while nobody could stream it: only the gap fill from REST can bring it
        during = {"symbol": "BTCUSDT", "price": 101.0, "qty": 1, "id": 2, "time": now - 2000}
        await _post(url, "/emulator/trades", during)
        await _post(url, "/emulator/down", {"down": False})
        assert [t.trade_id for t in await _ticks(consumer, 1)] == ["2"]

        await _subscribers(url, "btcusdt@trade", 1)
        after = {"symbol": "BTCUSDT", "price": 102.0, "qty": 1, "id": 3, "time": now - 1000}
        await _post(url, "/emulator/trades", after)
        # the first trade, sent again by the REST fill, was not sent twice
        assert [t.trade_id for t in await _ticks(consumer, 1)] == ["3"]
        assert ingestor.counters["malformed"] == 0


async def test_emulator_speaks_historical_and_aggregate_trades(
    emulator: tuple[str, EmulatorState],
) -> None:
    """``historicalTrades`` pages by trade id; ``aggTrades`` has ids of its own, as on
    Binance: one aggregate for a run of fills at one time, price and side."""
    url, _ = emulator
    now = int(time.time() * 1000)
    same = {"symbol": "ETHUSDT", "price": 2000.0, "time": now - 500, "buyer_is_maker": True}
    made = [
        {**same, "id": 41, "qty": 1},
        {**same, "id": 42, "qty": 2},  # one aggregate with 41
        {**same, "id": 43, "qty": 3, "price": 2001.0},
    ]
    await _post(url, "/emulator/trades", {"trades": made})
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{url}/api/v3/historicalTrades", params={"symbol": "ETHUSDT"})
        assert [t["id"] for t in await r.json()] == [41, 42, 43]
        q = {"symbol": "ETHUSDT", "fromId": "42", "limit": "1"}
        r = await s.get(f"{url}/api/v3/historicalTrades", params=q)
        [row] = await r.json()
        assert row == {
            "id": 42,
            "price": "2000.00000000",
            "qty": "2.00000000",
            "quoteQty": "4000.00000000",
            "time": now - 500,
            "isBuyerMaker": True,
            "isBestMatch": True,
        }
        r = await s.get(f"{url}/api/v3/aggTrades", params={"symbol": "ETHUSDT"})
        aggs = await r.json()
        assert [(a["f"], a["l"], a["q"]) for a in aggs] == [
            (41, 42, "3.00000000"),
            (43, 43, "3.00000000"),
        ]
        assert aggs[1]["a"] == aggs[0]["a"] + 1 and aggs[0]["a"] not in (41, 42, 43)
        r = await s.get(f"{url}/api/v3/historicalTrades", params={"limit": "5"})
        assert r.status == 400
        assert (await r.json())["code"] == -1102
        q = {"symbol": "ETHUSDT", "fromId": "x"}
        r = await s.get(f"{url}/api/v3/historicalTrades", params=q)
        assert (r.status, (await r.json())["code"]) == (400, -1100)
        q = {"symbol": "NOPE"}
        r = await s.get(f"{url}/api/v3/historicalTrades", params=q)
        assert (r.status, (await r.json())["code"]) == (400, -1121)


@pytest.mark.parametrize("api_key", [None, "a-key"])
async def test_gap_fill_pages_by_trade_id_through_ccxt(
    emulator: tuple[str, EmulatorState], api_key: str | None
) -> None:
    """With an API key CCXT's own ``publicGetHistoricalTrades`` serves; without, the
    same request through CCXT's fetch (CCXT's sign refuses the endpoint keyless)."""
    url, _ = emulator
    now = int(time.time() * 1000)
    made = [
        {"symbol": "SOLUSDT", "price": 90.0 + i, "qty": 1, "id": 100 + i, "time": now - 900 + i}
        for i in range(7)
    ]
    await _post(url, "/emulator/trades", {"trades": made})
    ex = make_exchange("binance", url, enableRateLimit=False, apiKey=api_key)
    try:
        await ex.load_markets()
        fill = GapFill(ccxt_fetch(ex, "SOL/USDT"), page=3)
        pages = [[t["id"] for t in p] async for p in fill.after(101)]
        assert pages == [["102", "103", "104"], ["105", "106"]] and fill.complete
        # without an id to start from: by time, back from the newest page
        fill = GapFill(ccxt_fetch(ex, "SOL/USDT"), page=3)
        pages = [[t["id"] for t in p] async for p in fill.since(now - 900 + 2)]
        assert [i for p in pages for i in p] == ["102", "103", "104", "105", "106"]
        # a short cap stops the fill and says so
        fill = GapFill(ccxt_fetch(ex, "SOL/USDT"), max_pages=1, page=3)
        assert [len(p) async for p in fill.after(99)] == [3] and not fill.complete
    finally:
        await ex.close()


@pytest.mark.parametrize("native", [True, False], ids=["native-stream", "ccxt-stream"])
async def test_gap_fill_gives_each_trade_once_with_the_streams_ids(
    emulator: tuple[str, EmulatorState], kafka: str, native: bool
) -> None:
    """The emulator's aggregate ids differ from its trade ids, as Binance's do: a gap
    filled from aggTrades (CCXT's ``fetch_trades``) would carry other ids and send
    aggregated trades as one. Whether the trades stream natively or through CCXT's
    ``watch_trades`` (``native_trade_stream: false``), the gap is filled by trade id."""
    url, _ = emulator
    async with _ingesting(url, kafka, native) as (ingestor, consumer):
        now = int(time.time() * 1000)
        trade = {"symbol": "BTCUSDT", "qty": 1, "buyer_is_maker": False}
        await _post(
            url, "/emulator/trades", {**trade, "price": 100.0, "id": 10, "time": now - 5000}
        )
        assert [t.trade_id for t in await _ticks(consumer, 1)] == ["10"]

        await _outage(url, ingestor, 1)
        during = [
            {**trade, "price": 101.0, "id": 11, "time": now - 4000},
            {**trade, "price": 101.0, "id": 12, "time": now - 4000, "qty": 2},  # aggregated
            {**trade, "price": 102.0, "id": 13, "time": now - 3000, "buyer_is_maker": True},
            {**trade, "price": 103.0, "id": 14, "time": now - 3000},
        ]
        await _post(url, "/emulator/trades", {"trades": during})
        await _post(url, "/emulator/down", {"down": False})
        filled = await _ticks(consumer, 4)
        assert [(t.trade_id, t.amount, t.side) for t in filled] == [
            ("11", 1.0, "buy"),
            ("12", 2.0, "buy"),
            ("13", 1.0, "sell"),
            ("14", 1.0, "buy"),
        ]

        await _subscribers(url, "btcusdt@trade", 1)
        await _post(
            url, "/emulator/trades", {**trade, "price": 104.0, "id": 15, "time": now - 2000}
        )
        # nothing sent twice: the next tick is the new trade
        assert [t.trade_id for t in await _ticks(consumer, 1)] == ["15"]
        # a second gap starts after the last streamed id
        await _outage(url, ingestor, 2)
        await _post(
            url, "/emulator/trades", {**trade, "price": 105.0, "id": 16, "time": now - 1000}
        )
        await _post(url, "/emulator/down", {"down": False})
        assert [t.trade_id for t in await _ticks(consumer, 1)] == ["16"]
        assert ingestor.counters["malformed"] == 0
