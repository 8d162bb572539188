"""Trades waiting for the person's "yes" in the chat.

No order is placed in the turn the model asks for it: the harness keeps it here and
asks; only the person's next message, if it confirms, places it. Anything else cancels
it, and so does five minutes passing.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

#: Tools that place orders: never run without a confirmation.
NEEDS_CONFIRMATION = frozenset({"execute_trade"})
_YES = re.compile(r"^\s*(yes|y|confirm(ed)?|ok(ay)?|do it|place it|go ahead)\b[\s.!]*$", re.I)


_NO = re.compile(r"^\s*(no|n|nope|cancel|stop|don'?t|abort)\b[\s.!]*$", re.I)


def is_confirmation(text: str) -> bool:
    return bool(_YES.match(text))


def is_refusal(text: str) -> bool:
    return bool(_NO.match(text))


def describe_order(args: dict[str, Any]) -> str:
    kind = args.get("order_type", "market")
    price = f" at {args['limit_price']:,}" if kind == "limit" and args.get("limit_price") else ""
    return (
        f"{args.get('side', '?')} {args.get('quantity', '?')} {args.get('ticker', '?')} "
        f"({kind}{price}, {args.get('mode', 'paper')})"
    )


@dataclass
class Confirmations:
    """One pending order per person (in process; a Redis hash in a multi-replica gateway)."""

    ttl_s: float = 300.0
    _pending: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def hold(self, user: str, args: dict[str, Any]) -> None:
        self._pending[user] = (time.monotonic() + self.ttl_s, dict(args))

    def peek(self, user: str) -> dict[str, Any] | None:
        entry = self._pending.get(user)
        if entry is None or entry[0] < time.monotonic():
            self._pending.pop(user, None)
            return None
        return entry[1]

    def take(self, user: str) -> dict[str, Any] | None:
        found = self.peek(user)
        self._pending.pop(user, None)
        return found
