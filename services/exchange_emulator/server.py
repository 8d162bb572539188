"""Loopback HTTP + WebSocket server speaking Binance's public spot API.

Unmodified CCXT works against it once its URLs point here. Served:

* REST ``/api/v3``: ``ping``, ``time``, ``exchangeInfo``, ``trades``,
  ``aggTrades``, ``klines`` (``startTime/endTime/limit`` pagination, limit ≤ 1000), with
  Binance's error bodies (``{"code": -1121, "msg": "Invalid symbol."}``) and
  HTTP codes, request weights in ``X-MBX-USED-WEIGHT-1M`` and HTTP 429 with
  ``Retry-After`` past the per-minute weight limit. ``/fapi`` and ``/dapi``
  ``exchangeInfo`` answer with no markets, so CCXT's default market loading works.
* WebSocket ``/ws``, ``/ws/<stream>`` and ``/stream?streams=a/b``: the
  ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` methods and the
  ``<symbol>@trade`` stream.
* Signed account API (``/api/v3/account``, ``/api/v3/order``; see
  :mod:`.account`) for a built-in test account, for live-trading tests.
* Control (not Binance; for tests and demos) under ``/emulator``: make a
  trade, push a raw (even malformed) payload to a stream, take the exchange
  down, read counters and accounts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from services.exchange_emulator.account import Accounts, add_account_routes
from services.exchange_emulator.simulator import MarketSimulator, SymbolSpec, Trade

_INTERVALS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
}
_WEIGHTS = {
    "24hr": 2,
    "klines": 2,
    "trades": 25,
    "aggTrades": 4,
    "exchangeInfo": 20,
    "ping": 1,
    "time": 1,
}
_LIVE_STEP_S = 0.05
_LIVE_TASK = web.AppKey("live_task", asyncio.Task[None])


class BinanceError(Exception):
    """An error answered the way Binance answers it."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    combined: bool
    streams: set[str] = field(default_factory=set)


@dataclass
class EmulatorState:
    """Live state: connections, recent trades, weight used, counters."""

    sim: MarketSimulator
    weight_limit: int
    clock: Callable[[], float] = time.time
    conns: list[_Conn] = field(default_factory=list)
    recent: dict[str, deque[Trade]] = field(default_factory=dict)
    weight_window: int = 0
    weight_used: int = 0
    down: bool = False
    injected_seq: int = 0
    stats: dict[str, int] = field(default_factory=lambda: {"trades_sent": 0, "rest_requests": 0})
    accounts: Accounts = field(default_factory=Accounts)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def _spec_or_error(state: EmulatorState, request: web.Request) -> SymbolSpec:
    symbol = request.query.get("symbol")
    if not symbol:
        raise _mandatory("symbol")
    spec = state.sim.spec(symbol.upper())
    if spec is None:
        raise BinanceError(400, -1121, "Invalid symbol.")
    return spec


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def _limit(request: web.Request) -> int:
    """The ``limit`` parameter: 500 by default, at most 1000, as Binance has it."""
    limit = _int_param(request, "limit", 500) or 500
    if not 1 <= limit <= 1000:
        raise BinanceError(400, -1130, "Invalid data sent for a parameter.")
    return limit


def _fmt(x: float) -> str:
    return f"{x:.8f}"


def _trade_event(spec: SymbolSpec, t: Trade, now_ms: int) -> dict[str, Any]:
    return {
        "e": "trade",
        "E": now_ms,
        "s": spec.market_id,
        "t": t.id,
        "p": _fmt(t.price),
        "q": _fmt(t.qty),
        "T": t.time,
        "m": t.buyer_is_maker,
        "M": True,
    }


def build_app(state: EmulatorState) -> web.Application:
    """The aiohttp application; ``state`` drives it (tests may share it)."""

    @web.middleware
    async def binance_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        rest = path.startswith(("/api/", "/fapi/", "/dapi/"))
        if rest:
            state.stats["rest_requests"] += 1
            if state.down:
                return web.json_response(
                    {
                        "code": -1001,
                        "msg": "Internal error; unable to process your request. Please try again.",
                    },
                    status=503,
                )
            window = state.now_ms() // 60_000
            if window != state.weight_window:
                state.weight_window, state.weight_used = window, 0
            state.weight_used += _WEIGHTS.get(path.rsplit("/", 1)[-1], 1)
            headers = {"X-MBX-USED-WEIGHT-1M": str(state.weight_used)}
            if state.weight_used > state.weight_limit:
                retry = 60 - (state.now_ms() // 1000) % 60
                return web.json_response(
                    {
                        "code": -1003,
                        "msg": (
                            f"Too much request weight used; current limit is {state.weight_limit} "
                            "request weight per 1 MINUTE. Please use WebSocket Streams for live "
                            "updates to avoid polling the API."
                        ),
                    },
                    status=429,
                    headers={**headers, "Retry-After": str(retry)},
                )
        try:
            response: web.StreamResponse = await handler(request)
        except BinanceError as exc:
            response = web.json_response(
                {"code": exc.code, "msg": exc.msg}, status=exc.status, headers=exc.headers
            )
        except web.HTTPNotFound:
            response = web.json_response({"code": -5000, "msg": "Path not found"}, status=404)
        if rest:
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(state.weight_used)
        return response

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({})

    async def server_time(_: web.Request) -> web.Response:
        return web.json_response({"serverTime": state.now_ms()})

    async def exchange_info(_: web.Request) -> web.Response:
        symbols = [
            {
                "symbol": s.market_id,
                "status": "TRADING",
                "baseAsset": s.base,
                "baseAssetPrecision": 8,
                "quoteAsset": s.quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": [
                    "LIMIT",
                    "LIMIT_MAKER",
                    "MARKET",
                    "STOP_LOSS_LIMIT",
                    "TAKE_PROFIT_LIMIT",
                ],
                "icebergAllowed": True,
                "ocoAllowed": True,
                "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True,
                "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": _fmt(s.tick_size),
                        "maxPrice": "1000000.00000000",
                        "tickSize": _fmt(s.tick_size),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": _fmt(s.step_size),
                        "maxQty": "9000.00000000",
                        "stepSize": _fmt(s.step_size),
                    },
                    {
                        "filterType": "NOTIONAL",
                        "minNotional": "5.00000000",
                        "applyMinToMarket": True,
                        "maxNotional": "9000000.00000000",
                        "applyMaxToMarket": False,
                        "avgPriceMins": 5,
                    },
                ],
                "permissions": [],
                "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }
            for s in state.sim.specs
        ]
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": state.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": state.weight_limit,
                    },
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            }
        )

    async def empty_exchange_info(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": state.now_ms(),
                "rateLimits": [],
                "exchangeFilters": [],
                "assets": [],
                "symbols": [],
            }
        )

    async def trades(request: web.Request) -> web.Response:
        spec = _spec_or_error(state, request)
        limit = _limit(request)
        recent = list(state.recent.get(spec.market_id, ()))[-limit:]
        return web.json_response(
            [
                {
                    "id": t.id,
                    "price": _fmt(t.price),
                    "qty": _fmt(t.qty),
                    "quoteQty": _fmt(t.price * t.qty),
                    "time": t.time,
                    "isBuyerMaker": t.buyer_is_maker,
                    "isBestMatch": True,
                }
                for t in recent
            ]
        )

    async def agg_trades(request: web.Request) -> web.Response:
        # Every simulated trade is its own aggregate.
        spec = _spec_or_error(state, request)
        limit = _limit(request)
        start = _int_param(request, "startTime", None)
        end = _int_param(request, "endTime", None)
        from_id = _int_param(request, "fromId", None)
        if start is not None and end is not None and not 0 <= end - start <= 3_600_000:
            raise BinanceError(400, -1127, "More than 1 hours between startTime and endTime.")
        recent = [
            t
            for t in state.recent.get(spec.market_id, ())
            if (start is None or t.time >= start)
            and (end is None or t.time <= end)
            and (from_id is None or t.id >= from_id)
        ]
        # a lower bound pages forward from it; otherwise the newest trades
        bounded = start is not None or from_id is not None
        recent = recent[:limit] if bounded else recent[-limit:]
        return web.json_response(
            [
                {
                    "a": t.id,
                    "p": _fmt(t.price),
                    "q": _fmt(t.qty),
                    "f": t.id,
                    "l": t.id,
                    "T": t.time,
                    "m": t.buyer_is_maker,
                    "M": True,
                }
                for t in recent
            ]
        )

    async def ticker_24hr(request: web.Request) -> web.Response:
        """One symbol's 24-hour statistics; the last price is the last trade made."""
        spec = _spec_or_error(state, request)
        now = state.now_ms()
        rows = state.sim.klines(spec, 3_600_000, now - 86_400_000, now)
        recent = state.recent.get(spec.market_id)
        last = recent[-1].price if recent else state.sim.price_at(spec, now)
        opened = float(rows[0][1]) if len(rows) else last
        high = max([last, *(float(r[2]) for r in rows)])
        low = min([last, *(float(r[3]) for r in rows)])
        volume = sum(float(r[5]) for r in rows)
        return web.json_response(
            {
                "symbol": spec.market_id,
                "priceChange": _fmt(last - opened),
                "priceChangePercent": _fmt((last / opened - 1) * 100 if opened else 0.0),
                "weightedAvgPrice": _fmt((high + low) / 2),
                "prevClosePrice": _fmt(opened),
                "lastPrice": _fmt(last),
                "lastQty": _fmt(recent[-1].qty if recent else 0.0),
                "bidPrice": _fmt(last),
                "bidQty": "1",
                "askPrice": _fmt(last),
                "askQty": "1",
                "openPrice": _fmt(opened),
                "highPrice": _fmt(high),
                "lowPrice": _fmt(low),
                "volume": _fmt(volume),
                "quoteVolume": _fmt(volume * last),
                "openTime": now - 86_400_000,
                "closeTime": now,
                "firstId": recent[0].id if recent else -1,
                "lastId": recent[-1].id if recent else -1,
                "count": len(recent) if recent else 0,
            }
        )

    async def klines(request: web.Request) -> web.Response:
        spec = _spec_or_error(state, request)
        interval = request.query.get("interval")
        if not interval:
            raise _mandatory("interval")
        step = _INTERVALS.get(interval)
        if step is None:
            raise BinanceError(400, -1120, "Invalid interval.")
        limit = _limit(request)
        start = _int_param(request, "startTime", None)
        end = _int_param(request, "endTime", None)
        now = state.now_ms()
        if start is not None and end is not None and start > end:
            raise BinanceError(400, -1023, "Start time is greater than end time.")
        last_open = now - now % step  # no kline opens in the future
        hi = min(end if end is not None else last_open, last_open)
        if start is None:
            hi_open = hi - hi % step
            lo = hi_open - (limit - 1) * step
        else:
            lo = start + (-start) % step  # first open time >= startTime
            hi = min(hi, lo + (limit - 1) * step)
        rows = state.sim.klines(spec, step, lo, hi + 1) if hi >= lo else np.empty((0, 7))
        body = [
            [
                int(r[0]),
                _fmt(r[1]),
                _fmt(r[2]),
                _fmt(r[3]),
                _fmt(r[4]),
                _fmt(r[5]),
                int(r[0]) + step - 1,
                _fmt(r[5] * r[4]),
                int(r[6]),
                _fmt(r[5] / 2),
                _fmt(r[5] * r[4] / 2),
                "0",
            ]
            for r in rows
        ]
        return web.json_response(body)

    async def ws_endpoint(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        if state.down:
            await ws.close(code=1011, message=b"exchange down")
            return ws
        conn = _Conn(ws, combined=request.path.startswith("/stream"))
        tail = request.match_info.get("stream", "")
        if "@" in tail:
            conn.streams.add(tail.lower())
        for name in request.query.get("streams", "").split("/"):
            if name:
                conn.streams.add(name.lower())
        state.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await _ws_method(conn, msg.data)
        finally:
            state.conns.remove(conn)
        return ws

    async def _ws_method(conn: _Conn, text: str) -> None:
        try:
            req = json.loads(text)
            method, req_id = req["method"], req.get("id")
        except (ValueError, KeyError, TypeError) as exc:
            await conn.ws.send_json({"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}})
            return
        params = req.get("params") or []
        if method == "SUBSCRIBE":
            conn.streams.update(str(p).lower() for p in params)
            await conn.ws.send_json({"result": None, "id": req_id})
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(str(p).lower() for p in params)
            await conn.ws.send_json({"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send_json({"result": sorted(conn.streams), "id": req_id})
        else:
            await conn.ws.send_json(
                {
                    "error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                    "id": req_id,
                }
            )

    def _bad(reason: str) -> web.HTTPBadRequest:
        return web.HTTPBadRequest(
            text=json.dumps({"error": reason}), content_type="application/json"
        )

    def _parse_trade(body: dict[str, Any]) -> tuple[SymbolSpec, Trade]:
        spec = state.sim.spec(str(body.get("symbol", "")).replace("/", "").upper())
        if spec is None:
            raise _bad(f"unknown symbol {body.get('symbol')!r}")
        try:
            price, qty = float(body["price"]), float(body["qty"])
            ts = int(body.get("time") or state.now_ms())
            trade_id = int(body["id"]) if "id" in body else None
        except (KeyError, TypeError, ValueError):
            raise _bad("price and qty are required numbers; time and id are integers") from None
        if trade_id is None:
            state.injected_seq += 1
            # simulated ids use the first 500 of each second's 1000
            trade_id = (ts // 1000) * 1000 + 500 + state.injected_seq % 500
        return spec, Trade(trade_id, ts, price, qty, bool(body.get("buyer_is_maker", False)))

    async def control_trade(request: web.Request) -> web.Response:
        """Make one trade (a JSON object) or several (``{"trades": [...]}``)."""
        body = await _json_body(request)
        items = body.get("trades", [body])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise _bad("trades must be a list of objects")
        parsed = [_parse_trade(item) for item in items]
        by_spec: dict[str, tuple[SymbolSpec, list[Trade]]] = {}
        for spec, trade in parsed:
            by_spec.setdefault(spec.market_id, (spec, []))[1].append(trade)
        for spec, trades in by_spec.values():
            await publish_trades(state, spec, trades)
        made = [{"id": t.id, "time": t.time, "symbol": sp.market_id} for sp, t in parsed]
        return web.json_response(made[0] if "trades" not in body else {"trades": made})

    async def control_raw(request: web.Request) -> web.Response:
        body = await _json_body(request)
        stream, payload = str(body.get("stream", "")).lower(), str(body.get("payload", ""))
        sent = 0
        for conn in list(state.conns):
            if stream in conn.streams and not conn.ws.closed:
                await conn.ws.send_str(payload)
                sent += 1
        return web.json_response({"sent": sent})

    async def control_down(request: web.Request) -> web.Response:
        body = await _json_body(request)
        state.down = bool(body.get("down", True))
        if state.down:
            for conn in list(state.conns):
                await conn.ws.close(code=1011, message=b"exchange down")
        return web.json_response({"down": state.down})

    async def control_stats(_: web.Request) -> web.Response:
        subscriptions: dict[str, int] = {}
        for conn in state.conns:
            for stream in conn.streams:
                subscriptions[stream] = subscriptions.get(stream, 0) + 1
        return web.json_response(
            {
                **state.stats,
                "connections": len(state.conns),
                "subscriptions": subscriptions,
                "weight_used": state.weight_used,
                "down": state.down,
            }
        )

    app = web.Application(middlewares=[binance_errors])
    r = app.router
    r.add_get("/api/v3/ping", ping)
    r.add_get("/api/v3/time", server_time)
    r.add_get("/api/v3/exchangeInfo", exchange_info)
    r.add_get("/api/v3/trades", trades)
    r.add_get("/api/v3/aggTrades", agg_trades)
    r.add_get("/api/v3/klines", klines)
    r.add_get("/api/v3/ticker/24hr", ticker_24hr)
    r.add_get("/fapi/v1/exchangeInfo", empty_exchange_info)
    r.add_get("/dapi/v1/exchangeInfo", empty_exchange_info)
    r.add_get("/ws", ws_endpoint)
    r.add_get("/ws/{stream}", ws_endpoint)
    r.add_get("/stream", ws_endpoint)
    r.add_post("/emulator/trades", control_trade)
    r.add_post("/emulator/raw", control_raw)
    r.add_post("/emulator/down", control_down)
    r.add_get("/emulator/stats", control_stats)
    r.add_get("/healthz", control_stats)

    async def start_live(app: web.Application) -> None:
        app[_LIVE_TASK] = asyncio.create_task(live_trades(state))

    async def stop_live(app: web.Application) -> None:
        app[_LIVE_TASK].cancel()
        for conn in list(state.conns):
            await conn.ws.close()

    def last_price(market_id: str) -> float | None:
        recent = state.recent.get(market_id)
        if recent:
            return recent[-1].price
        spec = state.sim.spec(market_id)
        return state.sim.price_at(spec, state.now_ms()) if spec else None

    def assets(market_id: str) -> tuple[str, str] | None:
        spec = state.sim.spec(market_id)
        return (spec.base, spec.quote) if spec else None

    add_account_routes(app, state.accounts, state.now_ms, last_price, assets)

    async def control_account(_: web.Request) -> web.Response:
        return web.json_response(
            {
                k: {"balances": a.balances, "orders": a.orders}
                for k, a in state.accounts.by_key.items()
            }
        )

    r.add_get("/emulator/accounts", control_account)
    app.on_startup.append(start_live)
    app.on_shutdown.append(stop_live)
    return app


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "expected a JSON object"}), content_type="application/json"
        )
    return body


async def publish_trades(state: EmulatorState, spec: SymbolSpec, trades: list[Trade]) -> None:
    """Record trades as recent and send them to every subscriber of the stream."""
    recent = state.recent.setdefault(spec.market_id, deque(maxlen=1000))
    recent.extend(trades)
    stream = f"{spec.market_id.lower()}@trade"
    now = state.now_ms()
    for conn in list(state.conns):
        if stream not in conn.streams or conn.ws.closed:
            continue
        for t in trades:
            event = _trade_event(spec, t, now)
            payload = {"stream": stream, "data": event} if conn.combined else event
            try:
                await conn.ws.send_json(payload)
            except ConnectionError:
                break
            state.stats["trades_sent"] += 1


async def live_trades(state: EmulatorState) -> None:
    """Emit the simulator's trades as wall-clock time passes."""
    last = state.now_ms()
    while True:
        await asyncio.sleep(_LIVE_STEP_S)
        now = state.now_ms()
        if state.down or now <= last:
            continue
        for spec in state.sim.specs:
            batch = state.sim.trades_between(spec, last, now)
            if batch:
                await publish_trades(state, spec, batch)
        last = now
