"""The paper broker: market and limit orders filled against live candles. Pure state.

Market orders fill at the latest known price (the close of the newest candle
update) moved against the trader by ``slippage``; limit orders fill when a
candle trades through the limit: at the limit, or at the candle's open when it
opened beyond it. Every fill pays ``fee_rate`` of its notional in the quote
currency. Positions carry an average entry price; realised PnL is booked as
they are reduced, unrealised PnL is marked at the last price.

The whole book serialises to JSON (:meth:`PaperBook.to_json`), so the agent
persists it after every change and restores it on start.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel

from dexorder.contracts.agent_tools import Fill, Order
from dexorder.markets import InvalidTicker, Ticker

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]


class OrderError(ValueError):
    """An order the broker refuses; the message says why."""


class Position(BaseModel):
    ticker: str
    quantity: float = 0.0
    average_price: float = 0.0
    realised_pnl: float = 0.0


class PaperBook(BaseModel):
    """Cash, positions, orders and fills of one person's paper account."""

    cash: float = 10_000.0
    quote: str = "USDT"
    fee_rate: float = 0.001
    slippage: float = 0.0005
    positions: dict[str, Position] = {}
    orders: dict[str, Order] = {}
    fills: list[Fill] = []
    last_prices: dict[str, float] = {}

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    # --- orders -------------------------------------------------------------

    def place(
        self,
        ticker: str,
        side: str,
        quantity: float,
        order_type: str = "market",
        limit_price: float | None = None,
        now_ms: int | None = None,
    ) -> tuple[Order, Fill | None]:
        """Place an order; a market order fills at once if the price is known."""
        try:
            t = str(Ticker.parse(ticker))
        except InvalidTicker as exc:
            raise OrderError(str(exc)) from None
        if side not in ("buy", "sell"):
            raise OrderError(f"invalid side {side!r}: expected buy or sell")
        if order_type not in ("market", "limit"):
            raise OrderError(f"invalid order type {order_type!r}: expected market or limit")
        if not quantity > 0:
            raise OrderError(f"invalid quantity {quantity!r}: must be above zero")
        if order_type == "limit" and not (limit_price and limit_price > 0):
            raise OrderError("a limit order needs a limit_price above zero")
        if order_type == "market" and t not in self.last_prices:
            raise OrderError(f"no live price for {t} yet; try again in a moment")
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        order = Order(
            id=uuid.uuid4().hex[:12],
            ticker=t,
            side=side,
            type=order_type,
            quantity=float(quantity),
            limit_price=limit_price if order_type == "limit" else None,
            created_at=now,
        )
        self._check_funds(order, limit_price or self.last_prices.get(t, 0.0))
        self.orders[order.id] = order
        if order_type == "market":
            price = self.last_prices[t]
            fill_price = price * (1 + self.slippage if side == "buy" else 1 - self.slippage)
            return order, self._fill(order, fill_price, now)
        return order, None

    def _check_funds(self, order: Order, price: float) -> None:
        if order.side == "buy":
            cost = order.quantity * price * (1 + self.slippage) * (1 + self.fee_rate)
            if cost > self.cash + 1e-9:
                raise OrderError(
                    f"not enough {self.quote}: the order needs about {cost:,.2f}, "
                    f"the account has {self.cash:,.2f}"
                )
        else:
            held = self.positions.get(order.ticker, Position(ticker=order.ticker)).quantity
            if order.quantity > held + 1e-12:
                raise OrderError(
                    f"cannot sell {order.quantity:g} {order.ticker}: the account holds {held:g} "
                    "(paper trading does not short)"
                )

    def cancel(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None or order.status != "open":
            raise OrderError(f"no open order with id {order_id!r}")
        order.status = "cancelled"
        return order

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status == "open"]

    # --- market data ------------------------------------------------------------

    def on_candle(
        self, ticker: str, open_: float, high: float, low: float, close: float, now_ms: int
    ) -> list[Fill]:
        """A candle update of ``ticker``: mark the price, fill the limit orders it reaches."""
        self.last_prices[ticker] = close
        fills = []
        for order in self.open_orders():
            if order.ticker != ticker or order.limit_price is None:
                continue
            limit = order.limit_price
            if order.side == "buy" and low <= limit:
                fills.append(self._fill(order, min(limit, open_), now_ms))
            elif order.side == "sell" and high >= limit:
                fills.append(self._fill(order, max(limit, open_), now_ms))
        return fills

    def _fill(self, order: Order, price: float, now_ms: int) -> Fill:
        fee = order.quantity * price * self.fee_rate
        pos = self.positions.setdefault(order.ticker, Position(ticker=order.ticker))
        realised = 0.0
        if order.side == "buy":
            self.cash -= order.quantity * price + fee
            total = pos.quantity + order.quantity
            pos.average_price = (pos.average_price * pos.quantity + price * order.quantity) / total
            pos.quantity = total
        else:
            sold = min(order.quantity, pos.quantity)
            realised = sold * (price - pos.average_price)
            self.cash += sold * price - fee
            pos.quantity -= sold
            pos.realised_pnl += realised
            if pos.quantity <= 1e-12:
                pos.quantity, pos.average_price = 0.0, 0.0
        order.status, order.filled_at, order.fill_price, order.fee = "filled", now_ms, price, fee
        fill = Fill(
            order_id=order.id,
            ticker=order.ticker,
            side=order.side,
            quantity=order.quantity,
            price=price,
            fee=fee,
            time=now_ms,
            realised_pnl=realised,
        )
        self.fills.append(fill)
        return fill

    # --- reporting --------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        """Cash, positions with unrealised PnL, equity, open orders."""
        positions = []
        equity = self.cash
        for p in self.positions.values():
            if p.quantity == 0 and p.realised_pnl == 0:
                continue
            last = self.last_prices.get(p.ticker, p.average_price)
            unrealised = p.quantity * (last - p.average_price)
            equity += p.quantity * last
            positions.append(
                {
                    "ticker": p.ticker,
                    "quantity": p.quantity,
                    "average_price": p.average_price,
                    "last_price": last,
                    "unrealised_pnl": unrealised,
                    "realised_pnl": p.realised_pnl,
                }
            )
        return {
            "mode": "paper",
            "cash": self.cash,
            "quote": self.quote,
            "equity": equity,
            "positions": positions,
            "open_orders": [o.model_dump() for o in self.open_orders()],
        }
