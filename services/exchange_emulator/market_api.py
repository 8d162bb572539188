"""Binance's public spot REST API: ``/api/v3`` ping, time, exchangeInfo, trades,
historicalTrades (``fromId``), aggTrades (aggregate ids, their own sequence),
ticker/24hr, klines (``startTime/endTime/limit`` pagination, limit ≤ 1000);
``/fapi`` and ``/dapi`` exchangeInfo with no markets, so CCXT's default market loading
works. :func:`rest_middleware` gives every REST answer Binance's error bodies, the
request weight used (``X-MBX-USED-WEIGHT-1M``) and HTTP 429 with ``Retry-After`` past
the per-minute weight limit."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.typedefs import Middleware

from services.exchange_emulator.simulator import SymbolSpec, Trade
from services.exchange_emulator.state import EmulatorState
from services.exchange_emulator.state import fmt_decimal as _fmt

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
    "historicalTrades": 25,
    "aggTrades": 4,
    "exchangeInfo": 20,
    "ping": 1,
    "time": 1,
}


class BinanceError(Exception):
    """An error answered the way Binance answers it."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


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


def rest_middleware(state: EmulatorState) -> Middleware:
    """Binance's weights, outage and error answers around every handler."""

    @web.middleware
    async def binance_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        rest = path.startswith(("/api/", "/fapi/", "/dapi/"))
        if rest:
            state.counts.rest_requests += 1
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

    return binance_errors


def add_market_routes(app: web.Application, state: EmulatorState) -> None:
    """Serve the public market data endpoints from ``state``."""

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

    def trade_rows(trades: list[Trade]) -> web.Response:
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
                for t in trades
            ]
        )

    async def trades(request: web.Request) -> web.Response:
        spec = _spec_or_error(state, request)
        limit = _limit(request)
        return trade_rows(list(state.recent.get(spec.market_id, ()))[-limit:])

    async def historical_trades(request: web.Request) -> web.Response:
        """Trades by trade id: from ``fromId`` on (inclusive), else the newest."""
        spec = _spec_or_error(state, request)
        limit = _limit(request)
        from_id = _int_param(request, "fromId", None)
        recent = state.recent.get(spec.market_id, ())
        if from_id is None:
            return trade_rows(list(recent)[-limit:])
        return trade_rows([t for t in recent if t.id >= from_id][:limit])

    async def agg_trades(request: web.Request) -> web.Response:
        # ids are aggregate ids (``fromId`` too); ``f``/``l`` the trade ids they hold
        spec = _spec_or_error(state, request)
        limit = _limit(request)
        start = _int_param(request, "startTime", None)
        end = _int_param(request, "endTime", None)
        from_id = _int_param(request, "fromId", None)
        if start is not None and end is not None and not 0 <= end - start <= 3_600_000:
            raise BinanceError(400, -1127, "More than 1 hours between startTime and endTime.")
        aggs = [
            a
            for a in state.aggregates.get(spec.market_id, ())
            if (start is None or a.time >= start)
            and (end is None or a.time <= end)
            and (from_id is None or a.id >= from_id)
        ]
        # a lower bound pages forward from it; otherwise the newest trades
        bounded = start is not None or from_id is not None
        aggs = aggs[:limit] if bounded else aggs[-limit:]
        return web.json_response(
            [
                {
                    "a": a.id,
                    "p": _fmt(a.price),
                    "q": _fmt(a.qty),
                    "f": a.first_id,
                    "l": a.last_id,
                    "T": a.time,
                    "m": a.buyer_is_maker,
                    "M": True,
                }
                for a in aggs
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

    r = app.router
    r.add_get("/api/v3/ping", ping)
    r.add_get("/api/v3/time", server_time)
    r.add_get("/api/v3/exchangeInfo", exchange_info)
    r.add_get("/api/v3/trades", trades)
    r.add_get("/api/v3/historicalTrades", historical_trades)
    r.add_get("/api/v3/aggTrades", agg_trades)
    r.add_get("/api/v3/klines", klines)
    r.add_get("/api/v3/ticker/24hr", ticker_24hr)
    r.add_get("/fapi/v1/exchangeInfo", empty_exchange_info)
    r.add_get("/dapi/v1/exchangeInfo", empty_exchange_info)
