"""The agent's broker: the paper book, persisted, fed live candles, telling fills as events."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent.broker.paper import PaperBook
from agent.events import EventPublisher
from agent.feed import PriceFeed
from dexorder.contracts.agent_tools import Fill
from dexorder.markets import InvalidTicker, Ticker
from dexorder.schemas import Candle


class PaperBroker:
    """``execute_trade`` and ``get_positions`` of the paper account, kept in ``path``."""

    def __init__(self, path: Path, events: EventPublisher | None = None) -> None:
        self.path = path
        self.events = events
        self.book = (
            PaperBook.model_validate_json(path.read_text()) if path.is_file() else PaperBook()
        )
        self.feed: PriceFeed | None = None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.book.to_json())
        os.replace(tmp, self.path)

    def tickers(self) -> set[str]:
        """Tickers whose prices the book needs: positions and open orders."""
        held = {t for t, p in self.book.positions.items() if p.quantity}
        return held | {o.ticker for o in self.book.open_orders()}

    def on_candle(self, candle: Candle) -> None:
        fills = self.book.on_candle(
            candle.ticker, candle.open, candle.high, candle.low, candle.close, candle.open_time
        )
        for fill in fills:
            self._tell(fill)
        if fills:
            self.save()

    def _tell(self, fill: Fill) -> None:
        if self.events is not None:
            self.events.critical("fill", {"mode": "paper", **fill.model_dump()})

    async def execute(
        self,
        ticker: str,
        side: str,
        quantity: float,
        order_type: str,
        limit_price: float | None,
    ) -> dict[str, Any]:
        try:
            t = str(Ticker.parse(ticker))
        except InvalidTicker as exc:
            raise ValueError(str(exc)) from None
        if self.feed is not None:
            if order_type == "market":
                await self.feed.price(t)
            else:
                await self.feed.watch(t)
        order, fill = self.book.place(t, side, quantity, order_type, limit_price)
        if fill is not None:
            self._tell(fill)
        self.save()
        return {"order": order.model_dump(), "fill": fill.model_dump() if fill else None}

    def cancel(self, order_id: str) -> dict[str, Any]:
        order = self.book.cancel(order_id)
        self.save()
        return order.model_dump()
