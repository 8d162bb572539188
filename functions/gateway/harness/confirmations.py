"""Trades waiting for the person's "yes" in the chat.

No order is placed in the turn the model asks for it: the harness keeps it here and
asks; only the person's next message, if it confirms, places it. Anything else cancels
it, and so does five minutes passing.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from dexorder.contracts.agent_tools import TradeOrder

#: Tools that place orders: never run without a confirmation.
NEEDS_CONFIRMATION = frozenset({"execute_trade"})
_YES = re.compile(r"^\s*(yes|y|confirm(ed)?|ok(ay)?|do it|place it|go ahead)\b[\s.!]*$", re.I)


_NO = re.compile(r"^\s*(no|n|nope|cancel|stop|don'?t|abort)\b[\s.!]*$", re.I)


def is_confirmation(text: str) -> bool:
    return bool(_YES.match(text))


def is_refusal(text: str) -> bool:
    return bool(_NO.match(text))


def describe_order(order: TradeOrder) -> str:
    kind = order.order_type
    price = f" at {order.limit_price:,}" if kind == "limit" and order.limit_price else ""
    return f"{order.side} {order.quantity} {order.ticker} ({kind}{price}, {order.mode})"


@dataclass
class Confirmations:
    """One pending order per person (in process; a Redis hash in a multi-replica gateway)."""

    ttl_s: float = 300.0
    _pending: dict[str, tuple[float, TradeOrder]] = field(default_factory=dict)

    def hold(self, user: str, order: TradeOrder) -> None:
        self._pending[user] = (time.monotonic() + self.ttl_s, order)

    def peek(self, user: str) -> TradeOrder | None:
        entry = self._pending.get(user)
        if entry is None or entry[0] < time.monotonic():
            self._pending.pop(user, None)
            return None
        return entry[1]

    def take(self, user: str) -> TradeOrder | None:
        found = self.peek(user)
        self._pending.pop(user, None)
        return found
