"""Price alerts: set, list, delete, and the pure check of a candle against them.

Alerts live in the agent's state folder (``alerts.json``, written atomically),
so they survive restarts. An active alert is a trigger: it keeps the agent
from being idle.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from dexorder.markets import InvalidTicker, Ticker

Condition = Literal["above", "below"]


class AlertError(ValueError):
    """A bad alert request; the message is for the person."""


class Alert(BaseModel):
    id: str
    ticker: str
    condition: Condition
    price: float = Field(gt=0)
    note: str = ""
    created_at: int
    triggered_at: int | None = None
    triggered_price: float | None = None

    @property
    def active(self) -> bool:
        return self.triggered_at is None


def crossed(alert: Alert, low: float, high: float) -> bool:
    """Whether a candle spanning ``[low, high]`` reaches the alert's price."""
    return high >= alert.price if alert.condition == "above" else low <= alert.price


class AlertBook:
    """The person's alerts, kept in ``path``."""

    MAX_ACTIVE = 100

    def __init__(self, path: Path) -> None:
        self.path = path
        self._alerts: dict[str, Alert] = {}
        if path.is_file():
            for raw in json.loads(path.read_text()):
                alert = Alert.model_validate(raw)
                self._alerts[alert.id] = alert

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([a.model_dump() for a in self._alerts.values()], indent=2))
        os.replace(tmp, self.path)

    def add(self, ticker: str, condition: str, price: float, note: str = "") -> Alert:
        try:
            t = str(Ticker.parse(ticker))
        except InvalidTicker as exc:
            raise AlertError(str(exc)) from None
        if condition not in ("above", "below"):
            raise AlertError(f"invalid condition {condition!r}: expected 'above' or 'below'")
        if not price > 0:
            raise AlertError(f"invalid price {price!r}: must be above zero")
        if len(self.active()) >= self.MAX_ACTIVE:
            raise AlertError(f"at most {self.MAX_ACTIVE} active alerts; delete some first")
        alert = Alert(
            id=uuid.uuid4().hex[:12],
            ticker=t,
            condition="above" if condition == "above" else "below",
            price=float(price),
            note=note[:500],
            created_at=int(time.time() * 1000),
        )
        self._alerts[alert.id] = alert
        self._save()
        return alert

    def all(self) -> list[Alert]:
        return sorted(self._alerts.values(), key=lambda a: a.created_at)

    def active(self) -> list[Alert]:
        return [a for a in self.all() if a.active]

    def delete(self, alert_id: str) -> Alert:
        alert = self._alerts.pop(alert_id, None)
        if alert is None:
            ids = ", ".join(self._alerts) or "none"
            raise AlertError(f"no alert with id {alert_id!r} (have: {ids})")
        self._save()
        return alert

    def check(self, ticker: str, low: float, high: float, close: float) -> list[Alert]:
        """Mark and return the active alerts of ``ticker`` this candle triggers."""
        fired = []
        for alert in self.active():
            if alert.ticker == ticker and crossed(alert, low, high):
                alert.triggered_at = int(time.time() * 1000)
                alert.triggered_price = close
                fired.append(alert)
        if fired:
            self._save()
        return fired
