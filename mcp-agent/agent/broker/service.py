"""The agent's broker: the paper book, persisted, fed live candles, telling fills as events.

Where the platform watches the market (``rules`` set), every resting order is also a rule
(:class:`~dexorder.contracts.rules.OrderTrigger`) registered through the gateway: the
stream engine fires it, and the platform wakes this agent to apply the fill
(:meth:`PaperBroker.apply_fired`, idempotent by order id). An agent on its own fills its
resting orders from the candles it watches.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

from agent.broker.paper import PaperBook
from agent.events import EventPublisher
from agent.feed import PriceFeed
from agent.rules_client import AlreadyFired, RuleClient, RuleError
from dexorder.contracts.agent_tools import Fill, Order, PaperTrade
from dexorder.contracts.rules import OrderTrigger, Rule, RuleFired
from dexorder.markets import InvalidTicker, Ticker
from dexorder.schemas import Candle

log = structlog.get_logger(part="agent")


def order_rule_id(order_id: str) -> str:
    """The rule id of a resting order's trigger."""
    return f"order-{order_id}"


def order_rule(user: str, order: Order) -> Rule:
    """The rule that fires ``order`` (a resting one) when its price comes."""
    assert order.limit_price is not None and order.type != "market"
    return Rule(
        id=order_rule_id(order.id),
        user=user,
        ticker=order.ticker,
        condition=OrderTrigger(
            order_id=order.id,
            order_type=order.type,
            side=order.side,
            quantity=order.quantity,
            level=order.limit_price,
        ),
        created_at=order.created_at,
    )


class PaperBroker:
    """``execute_trade`` and ``get_positions`` of the paper account, kept in ``path``."""

    def __init__(
        self,
        path: Path,
        events: EventPublisher | None = None,
        user: str = "",
        rules: RuleClient | None = None,
    ) -> None:
        self.path = path
        self.events = events
        self.user = user
        #: the platform's rules: where set, it watches resting orders, not this agent
        self.rules = rules
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
            candle.ticker,
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.open_time,
            fill_resting=self.rules is None,
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
    ) -> PaperTrade:
        try:
            t = str(Ticker.parse(ticker))
        except InvalidTicker as exc:
            raise ValueError(str(exc)) from None
        if self.feed is not None:
            if order_type == "market":
                await self.feed.price(t)
            elif self.rules is None:
                await self.feed.watch(t)
        order, fill = self.book.place(t, side, quantity, order_type, limit_price)
        if order.status == "open" and self.rules is not None:
            try:
                await self.rules.put(order_rule(self.user, order))
            except RuleError:
                del self.book.orders[order.id]  # an order nobody watches never rests
                raise
        if fill is not None:
            self._tell(fill)
        self.save()
        return PaperTrade(order=order, fill=fill)

    async def cancel(self, order_id: str) -> Order:
        known = self.book.orders.get(order_id)
        if known is not None and known.status == "open" and self.rules is not None:
            try:
                await self.rules.delete(order_rule_id(order_id), unless_fired=True)
            except AlreadyFired:
                raise RuleError(
                    f"order {order_id} has just been triggered: its fill is on its way"
                ) from None
        order = self.book.cancel(order_id)
        self.save()
        return order

    async def register_resting(self) -> int:
        """Make sure every open resting order has its rule (an order placed while this agent
        watched its orders itself would otherwise never fill). A rule already there, fired
        or not, is left as it is. Called before the agent serves, so never beside an apply.
        """
        if self.rules is None:
            return 0
        for order in self.book.open_orders():
            await self.rules.put(order_rule(self.user, order))
        return len(self.book.open_orders())

    async def apply_fired(self, fired: RuleFired) -> tuple[Order, Fill | None]:
        """Fill the resting order whose rule fired (the platform delivers it, maybe more
        than once: a second time the order is filled already, and nothing changes)."""
        rule, trigger = fired.rule, fired.rule.condition
        if not isinstance(trigger, OrderTrigger):
            raise RuleError(f"rule {rule.id} is not an order's")
        if rule.user != self.user:
            raise RuleError(f"rule {rule.id} is another person's")
        order = self.book.orders.get(trigger.order_id)
        if order is None:
            raise RuleError(f"no paper order {trigger.order_id}")
        if (order.ticker, order.side, order.type) != (
            rule.ticker,
            trigger.side,
            trigger.order_type,
        ):
            raise RuleError(f"rule {rule.id} does not match order {order.id}")
        price = fired.fill_price if fired.fill_price is not None else fired.price
        fill = self.book.fill_triggered(order.id, price, fired.fired_at)
        if fill is not None:
            self._tell(fill)
            self.save()
        if self.rules is not None:
            # the fired rule has done its work; the order's state is the book's now
            with contextlib.suppress(RuleError):
                await self.rules.delete(rule.id)
        return order, fill
