"""Filling a Binance spot trade stream's gap by trade id, through CCXT.

CCXT's ``fetch_trades`` reads Binance's ``aggTrades``, whose ids are aggregate-trade
ids, not the trade ids of the ``<symbol>@trade`` stream: its ticks would not dedup
against streamed ones downstream (by exchange, symbol, trade id) and trades would
count twice in candles. So the gap is filled from ``/api/v3/historicalTrades``
(``fromId``: public on Binance spot), which carries the stream's own ids, parsed by
CCXT's own trade parser.

When the stream never delivered a trade (no id to start from), the fill is by time
over the same ids: the newest trades from ``/api/v3/trades``, and, while all of them
are newer than the gap's start, the older ones before them from ``historicalTrades``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

#: Binance's most trades a page.
PAGE = 1000
#: Pages one fill reads at most (each weighs 25 of Binance's 6,000 a minute): past it
#: the rest of a long gap is left to the klines backfill, with a warning.
MAX_PAGES = 60
#: Pages read back in time at most when there is no trade id to start from.
MAX_PAGES_BACK = 10

#: Trades of a symbol, ascending: from trade id ``from_id`` on (None: the newest), at
#: most ``limit``; CCXT's unified trades.
Fetch = Callable[[int | None, int], Awaitable[list[dict[str, Any]]]]


class GapFill:
    """The trades one gap lacked, page by page; ``complete`` once it caught up."""

    def __init__(self, fetch: Fetch, max_pages: int = MAX_PAGES, page: int = PAGE) -> None:
        self.fetch, self.max_pages, self.page = fetch, max_pages, page
        self.complete = False

    async def after(self, last_id: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of the trades after trade id ``last_id``, until a short page (no more:
        the stream has the rest) or ``max_pages``."""
        from_id = last_id + 1
        for _ in range(self.max_pages):
            trades = await self.fetch(from_id, self.page)
            if trades:
                yield trades
            if len(trades) < self.page:
                self.complete = True
                return
            from_id = int(trades[-1]["id"]) + 1

    async def since(self, since_ms: int) -> AsyncIterator[list[dict[str, Any]]]:
        """The trades at or after ``since_ms``: the newest page, and the pages before it
        while a whole page is that new (at most ``MAX_PAGES_BACK``), oldest first."""
        pages = [await self.fetch(None, self.page)]
        self.complete = True
        while len(pages[0]) == self.page and pages[0][0]["timestamp"] >= since_ms:
            first = int(pages[0][0]["id"])
            if first <= 0:
                break
            if len(pages) > MAX_PAGES_BACK:
                self.complete = False
                break
            older = await self.fetch(max(0, first - self.page), self.page)
            older = [t for t in older if int(t["id"]) < first]
            if not older:
                break
            pages.insert(0, older)
        for trades in pages:
            kept = [t for t in trades if t["timestamp"] >= since_ms]
            if kept:
                yield kept


def fills_by_trade_id(exchange: Any) -> bool:
    """Whether ``exchange`` (CCXT) is Binance spot, whose gaps are filled here."""
    return str(getattr(exchange, "id", "")) == "binance"


def ccxt_fetch(exchange: Any, symbol: str) -> Fetch:
    """:data:`Fetch` for a spot ``symbol`` of a loaded CCXT Binance exchange."""
    market = exchange.market(symbol)

    async def fetch(from_id: int | None, limit: int) -> list[dict[str, Any]]:
        if from_id is None:
            raw = await exchange.publicGetTrades({"symbol": market["id"], "limit": limit})
        else:
            params = {"symbol": market["id"], "fromId": from_id, "limit": limit}
            raw = await _historical_trades(exchange, params)
        trades: list[dict[str, Any]] = exchange.parse_trades(raw, market)
        return trades

    return fetch


async def _historical_trades(exchange: Any, params: dict[str, Any]) -> Any:
    """``GET /api/v3/historicalTrades`` through CCXT.

    CCXT's implicit ``publicGetHistoricalTrades`` refuses to run without an API key
    (its ``sign`` still treats the endpoint as needing one, as Binance did before
    2023; spot Binance now serves it without). With a key it is used as it is;
    without, the same request is made with CCXT's own URL, rate limiter, HTTP session
    and error mapping, leaving only the key check out.
    """
    if exchange.apiKey:
        return await exchange.publicGetHistoricalTrades(params)
    if exchange.enableRateLimit:
        config = exchange.api.get("public", {}).get("get", {}).get("historicalTrades", {})
        cost = config.get("cost", 1) if isinstance(config, dict) else 1
        await exchange.throttle(cost)
    url = f"{exchange.urls['api']['public']}/historicalTrades?{exchange.urlencode(params)}"
    return await exchange.fetch(url, "GET", None, None)
