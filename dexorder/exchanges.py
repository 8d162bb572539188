"""Building the CCXT client of an exchange, real or emulated."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import ccxt.pro as ccxtpro

_HOST = re.compile(r"^(wss?|https?)://[^/]+")


def point_ccxt_at(exchange: Any, base_url: str) -> None:
    """Rewrite every API URL of a CCXT exchange to ``base_url``, keeping the paths.

    This is the only change made to CCXT to use the exchange emulator.
    """
    http = base_url.rstrip("/")
    ws = re.sub(r"^http", "ws", http)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, str):
            return _HOST.sub(lambda m: ws if m.group(1).startswith("ws") else http, node)
        return node

    exchange.urls["api"] = rewrite(exchange.urls["api"])


def _hardened(cls: type, on_malformed: Callable[[Any, BaseException | None], None]) -> type:
    """A subclass whose WebSocket message handler survives malformed payloads.

    CCXT's own handlers can raise on unexpected payloads (binance's does on a
    JSON array), which ends the connection's receive loop without an error
    reaching the caller: the stream would silently stall.
    """

    def handle_message(self: Any, client: Any, message: Any) -> Any:
        if not isinstance(message, dict | list):
            on_malformed(message, None)
            return None
        try:
            return getattr(cls, "handle_message")(self, client, message)  # noqa: B009
        except Exception as exc:
            on_malformed(message, exc)
            return None

    return type(f"Hardened{cls.__name__}", (cls,), {"handle_message": handle_message})


def make_exchange(
    ccxt_id: str,
    emulator_url: str | None,
    on_malformed: Callable[[Any, BaseException | None], None] | None = None,
    **options: Any,
) -> Any:
    """An async CCXT (pro) exchange; pointed at the emulator when ``emulator_url`` is set."""
    cls = getattr(ccxtpro, ccxt_id, None)
    if not isinstance(cls, type):
        raise ValueError(f"unknown CCXT exchange id {ccxt_id!r}")
    if on_malformed is not None:
        cls = _hardened(cls, on_malformed)
    exchange = cls({"enableRateLimit": True, **options})
    if emulator_url:
        point_ccxt_at(exchange, emulator_url)
    return exchange
