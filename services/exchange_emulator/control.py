"""Control of the emulator (not Binance; for tests and demos) under ``/emulator``: make
a trade, push a raw (even malformed) payload to a stream, take the exchange down, read
counters and accounts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from services.exchange_emulator.simulator import SymbolSpec, Trade
from services.exchange_emulator.state import EmulatorState
from services.exchange_emulator.streams import publish_trades


def add_control_routes(app: web.Application, state: EmulatorState) -> None:
    """Serve ``/emulator/*`` (and ``/healthz``) on ``state``."""

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
                **dataclasses.asdict(state.counts),
                "connections": len(state.conns),
                "subscriptions": subscriptions,
                "weight_used": state.weight_used,
                "down": state.down,
            }
        )

    async def control_account(_: web.Request) -> web.Response:
        return web.json_response(
            {
                k: {"balances": a.balances, "orders": a.orders}
                for k, a in state.accounts.by_key.items()
            }
        )

    r = app.router
    r.add_post("/emulator/trades", control_trade)
    r.add_post("/emulator/raw", control_raw)
    r.add_post("/emulator/down", control_down)
    r.add_get("/emulator/stats", control_stats)
    r.add_get("/healthz", control_stats)
    r.add_get("/emulator/accounts", control_account)


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
