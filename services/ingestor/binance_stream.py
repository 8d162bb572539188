"""Reading Binance's raw ``<symbol>@trade`` WebSocket stream (the ingestor's fast path).

The URL is built from the CCXT exchange object's own ``urls['api']['ws']``, so
an exchange pointed at the emulator (:func:`dexorder.exchanges.point_ccxt_at`)
is read exactly where CCXT would read it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

#: Binance pings every few minutes and drops a connection that does not answer;
#: aiohttp answers on its own. Ours find a dead connection in about this long.
HEARTBEAT_S = 30.0


def trade_stream_url(exchange: Any, symbol: str) -> str | None:
    """The raw trade stream of a spot ``symbol`` on a loaded CCXT exchange; None when
    the symbol is not a spot market there (CCXT's ``watch_trades`` serves it)."""
    market = (exchange.markets or {}).get(symbol)
    if not market or not market.get("spot"):
        return None
    base = str(exchange.urls["api"]["ws"]["spot"]).rstrip("/")
    stream_id = market.get("lowercaseId") or str(market["id"]).lower()
    return f"{base}/{stream_id}@trade"


def connect(session: aiohttp.ClientSession, url: str) -> Any:
    """The WebSocket of the stream at ``url``, as an async context manager."""
    return session.ws_connect(url, heartbeat=HEARTBEAT_S, max_msg_size=1 << 20)


async def raw_messages(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[str | bytes]:
    """The messages of an open stream as they arrive; ConnectionError when it ends.

    A stream never ends by itself (Binance closes connections after 24 h, or when
    it is down): the caller reconnects and fills the gap.
    """
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            yield msg.data
        elif msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            reason = ws.exception() or msg.extra or ws.close_code
            raise ConnectionError(f"trade stream closed: {reason}")
