"""Binance's WebSocket streams: ``/ws``, ``/ws/<stream>`` and ``/stream?streams=a/b``,
the ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` methods and the
``<symbol>@trade`` stream, fed with the simulator's trades as wall-clock time passes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from services.exchange_emulator.simulator import SymbolSpec, Trade
from services.exchange_emulator.state import Connection, EmulatorState
from services.exchange_emulator.state import fmt_decimal as _fmt

_LIVE_STEP_S = 0.05
_LIVE_TASK = web.AppKey("live_task", asyncio.Task[None])


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


def add_stream_routes(app: web.Application, state: EmulatorState) -> None:
    """Serve the streams from ``state``, and its live trades while ``app`` runs."""

    async def ws_endpoint(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        if state.down:
            await ws.close(code=1011, message=b"exchange down")
            return ws
        conn = Connection(ws, combined=request.path.startswith("/stream"))
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

    async def _ws_method(conn: Connection, text: str) -> None:
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

    async def start_live(app: web.Application) -> None:
        app[_LIVE_TASK] = asyncio.create_task(live_trades(state))

    async def stop_live(app: web.Application) -> None:
        app[_LIVE_TASK].cancel()
        for conn in list(state.conns):
            await conn.ws.close()

    r = app.router
    r.add_get("/ws", ws_endpoint)
    r.add_get("/ws/{stream}", ws_endpoint)
    r.add_get("/stream", ws_endpoint)
    app.on_startup.append(start_live)
    app.on_shutdown.append(stop_live)


@contextlib.contextmanager
def _corked(ws: web.WebSocketResponse) -> Iterator[None]:
    """Hold a batch's frames in the kernel and send them as one segment at the end.

    Binance sends each trade as its own message; written one ``send()`` at a time on
    loopback, every frame also ran the receiving side's TCP path and woke the client,
    which at 10,000 trades/s cost the exchange stand-in and the ingestor more CPU than
    the platform's own work on the machines the benchmarks run on.
    """
    sock = ws.get_extra_info("socket")
    cork = getattr(socket, "TCP_CORK", None)  # Linux only; elsewhere frames go one by one
    if sock is None or cork is None:
        yield
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # the connection may have closed meanwhile
            sock.setsockopt(socket.IPPROTO_TCP, cork, 0)


async def publish_trades(state: EmulatorState, spec: SymbolSpec, trades: list[Trade]) -> None:
    """Record trades as recent and send them to every subscriber of the stream."""
    state.record(spec.market_id, trades)
    stream = f"{spec.market_id.lower()}@trade"
    now = state.now_ms()
    events = [_trade_event(spec, t, now) for t in trades]
    # encoded once per kind of connection, not once per connection
    texts: dict[bool, list[str]] = {}
    for conn in list(state.conns):
        if stream not in conn.streams or conn.ws.closed:
            continue
        if conn.combined not in texts:
            texts[conn.combined] = [
                msgspec.json.encode({"stream": stream, "data": e} if conn.combined else e).decode()
                for e in events
            ]
        with _corked(conn.ws):
            for text in texts[conn.combined]:
                try:
                    await conn.ws.send_str(text)
                except ConnectionError:
                    break
                state.counts.trades_sent += 1


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
