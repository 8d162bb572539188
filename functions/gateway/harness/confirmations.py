"""Trades waiting for the person's "yes" in the chat: what counts as yes and no.

No order is placed in the turn the model asks for it: the turn graph holds it (an
``interrupt()`` in ``graph.py``, its checkpoint shared by the gateway's replicas) and
asks; only the person's next message, if it confirms, places it. Anything else cancels
it, and so does ``CONFIRM_TTL_S`` passing.
"""

from __future__ import annotations

import re

from dexorder.contracts.agent_tools import TradeOrder

#: How long an order waits for the person's "yes" (seconds).
CONFIRM_TTL_S = 300.0
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
