"""Loopback HTTP + WebSocket server speaking Binance's public spot API.

Unmodified CCXT works against it once its URLs point here. Served, one module each:

* :mod:`.market_api`: the public REST market data under ``/api/v3`` (and the empty
  ``/fapi``, ``/dapi`` exchangeInfo), with Binance's error bodies, request weights and
  HTTP 429 past the per-minute weight limit.
* :mod:`.streams`: the WebSocket ``/ws``, ``/ws/<stream>`` and ``/stream?streams=a/b``
  with the ``<symbol>@trade`` stream.
* :mod:`.account`: the signed account API (``/api/v3/account``, ``/api/v3/order``) for
  a built-in test account, for live-trading tests.
* :mod:`.control`: control (not Binance; for tests and demos) under ``/emulator``.

All of them read and change one :class:`~.state.EmulatorState`.
"""

from __future__ import annotations

from aiohttp import web

from services.exchange_emulator.account import add_account_routes
from services.exchange_emulator.control import add_control_routes
from services.exchange_emulator.market_api import add_market_routes, rest_middleware
from services.exchange_emulator.state import EmulatorState
from services.exchange_emulator.streams import add_stream_routes

__all__ = ["EmulatorState", "build_app"]


def build_app(state: EmulatorState) -> web.Application:
    """The aiohttp application; ``state`` drives it (tests may share it)."""
    app = web.Application(middlewares=[rest_middleware(state)])
    add_market_routes(app, state)
    add_stream_routes(app, state)
    add_control_routes(app, state)
    _add_account_api(app, state)
    return app


def _add_account_api(app: web.Application, state: EmulatorState) -> None:
    """The signed account API (:mod:`.account`), priced by the simulated market."""

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
