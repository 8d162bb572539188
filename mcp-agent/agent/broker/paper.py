"""The paper broker: market orders, and resting limit, stop-loss and take-profit orders.
Pure state.

Market orders fill at the latest known price (the close of the newest candle
update) moved against the trader by ``slippage``. Resting orders wait for their
price (``limit_price``): where the platform watches the market they fill when their
rule fires (:meth:`PaperBook.fill_triggered`, at the price the stream engine says);
an agent on its own fills them from candles (:func:`triggered_price`): a limit or
take-profit when a candle trades through its price, at it or at the candle's open when
it opened beyond it; a stop-loss when a candle reaches it, at it or at a worse open.
Every fill pays ``fee_rate`` of its notional in the quote currency. Positions carry an
average entry price; realised PnL is booked as they are reduced, unrealised PnL is
marked at the last price.

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
#: the orders that rest until their price
RESTING = ("limit", "stop_loss", "take_profit")


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
        if order_type != "market" and order_type not in RESTING:
            raise OrderError(
                f"invalid order type {order_type!r}: expected market, limit, stop_loss or "
                "take_profit"
            )
        if not quantity > 0:
            raise OrderError(f"invalid quantity {quantity!r}: must be above zero")
        if order_type in RESTING and not (limit_price and limit_price > 0):
            raise OrderError(f"a {order_type} order needs a limit_price above zero")
        if order_type == "market" and t not in self.last_prices:
            raise OrderError(f"no live price for {t} yet; try again in a moment")
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        order = Order(
            id=uuid.uuid4().hex[:12],
            ticker=t,
            side=side,
            type=order_type,
            quantity=float(quantity),
            limit_price=limit_price if order_type in RESTING else None,
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

    def fill_triggered(self, order_id: str, price: float, now_ms: int) -> Fill | None:
        """Fill the resting order ``order_id`` whose rule fired, at ``price``; None (and no
        change) when it is not open any more: filled already, or cancelled."""
        order = self.orders.get(order_id)
        if order is None or order.status != "open" or order.type not in RESTING:
            return None
        return self._fill(order, price, now_ms)

    # --- market data ------------------------------------------------------------

    def on_candle(
        self,
        ticker: str,
        open_: float,
        high: float,
        low: float,
        close: float,
        now_ms: int,
        fill_resting: bool = True,
    ) -> list[Fill]:
        """A candle update of ``ticker``: mark the price, and (``fill_resting``: an agent
        that watches its own orders) fill the resting orders it reaches."""
        self.last_prices[ticker] = close
        if not fill_resting:
            return []
        fills = []
        for order in self.open_orders():
            if order.ticker != ticker:
                continue
            price = triggered_price(order, open_, high, low)
            if price is not None:
                fills.append(self._fill(order, price, now_ms))
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


def triggered_price(order: Order, open_: float, high: float, low: float) -> float | None:
    """The price a candle spanning ``[low, high]`` that opened at ``open_`` fills the resting
    ``order`` at, or None when it does not reach it (the engines' rule, on a candle)."""
    level = order.limit_price
    if level is None or order.type not in RESTING:
        return None
    if order.type == "stop_loss":  # a market order once reached: the worse of level, open
        if order.side == "sell" and low <= level:
            return min(level, open_)
        if order.side == "buy" and high >= level:
            return max(level, open_)
        return None
    if order.side == "buy" and low <= level:  # limit, take-profit: the level or better
        return min(level, open_)
    if order.side == "sell" and high >= level:
        return max(level, open_)
    return None
