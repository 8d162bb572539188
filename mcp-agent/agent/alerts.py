"""Price alerts: set, list, delete, and the pure check of a candle against them.

Where the platform watches the market (the agent has a gateway to register rules with),
an alert is a rule (:func:`alert_rule`) the stream engine evaluates; the platform is the
source of truth, and ``alerts.json`` is this agent's mirror of what it last heard (for
its context resource). An agent on its own keeps its alerts in ``alerts.json`` (written
atomically, so they survive restarts) and checks them against the candles it watches:
then an active alert is a trigger that keeps the agent from being idle.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Literal

import msgspec
from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import MarketAlert
from dexorder.contracts.rules import (
    BadRule,
    PercentMove,
    PriceCross,
    Rule,
    RuleRecord,
    VolumeSpike,
    check_rule,
)
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


def checked(ticker: str, condition: str, price: float) -> tuple[str, Condition, float]:
    """The alert's ticker (canonical), condition and price; :class:`AlertError` if bad."""
    try:
        t = str(Ticker.parse(ticker))
    except InvalidTicker as exc:
        raise AlertError(str(exc)) from None
    if condition not in ("above", "below"):
        raise AlertError(f"invalid condition {condition!r}: expected 'above' or 'below'")
    if not price > 0:
        raise AlertError(f"invalid price {price!r}: must be above zero")
    return t, "above" if condition == "above" else "below", float(price)


def alert_rule(
    user: str, ticker: str, condition: str, price: float, note: str, rule_id: str
) -> Rule:
    """The platform rule of a price alert (checked; :class:`AlertError` if bad)."""
    t, cond, level = checked(ticker, condition, price)
    return Rule(
        id=rule_id,
        user=user,
        ticker=t,
        condition=PriceCross(direction=cond, level=level),
        created_at=int(time.time() * 1000),
        note=note[:500],
    )


def alert_of(record: RuleRecord) -> Alert | None:
    """The alert a platform rule is (None for rules of other kinds)."""
    rule, fired = record.rule, record.fired
    if not isinstance(rule.condition, PriceCross):
        return None
    return Alert(
        id=rule.id,
        ticker=rule.ticker,
        condition=rule.condition.direction,
        price=rule.condition.level,
        note=rule.note,
        created_at=rule.created_at,
        triggered_at=fired.fired_at if fired is not None else None,
        triggered_price=fired.price if fired is not None else None,
    )


def market_rule(
    user: str,
    ticker: str,
    kind: str,
    rule_id: str,
    *,
    percent: float | None = None,
    window_s: int | None = None,
    direction: str = "either",
    timeframe: str = "1m",
    multiple: float | None = None,
    lookback: int = 20,
    note: str = "",
) -> Rule:
    """The platform rule of a move or volume-spike alert; :class:`AlertError` saying what
    is wrong (the contract's bounds: percent up to 1000, windows 1 s to a day, …)."""
    if kind == "percent_move":
        if percent is None or window_s is None:
            raise AlertError("a percent_move alert needs percent and window_s")
        raw: dict[str, object] = {
            "type": "percent_move",
            "percent": percent,
            "window_ms": window_s * 1000,
            "direction": direction,
        }
    elif kind == "volume_spike":
        if multiple is None:
            raise AlertError("a volume_spike alert needs multiple (e.g. 3 for 3x the average)")
        raw = {
            "type": "volume_spike",
            "timeframe": timeframe,
            "multiple": multiple,
            "lookback": lookback,
        }
    else:
        raise AlertError(f"invalid kind {kind!r}: expected percent_move or volume_spike")
    try:
        condition = msgspec.convert(raw, PercentMove | VolumeSpike)
        return check_rule(
            Rule(
                id=rule_id,
                user=user,
                ticker=ticker,
                condition=condition,
                created_at=int(time.time() * 1000),
                note=note[:500],
            )
        )
    except msgspec.ValidationError as exc:
        raise AlertError(f"invalid {kind} alert: {exc}") from None
    except BadRule as exc:
        raise AlertError(str(exc)) from None


def market_alert_of(record: RuleRecord) -> MarketAlert | None:
    """The move or volume-spike alert a platform rule is (None for other kinds)."""
    rule, fired, c = record.rule, record.fired, record.rule.condition
    common = {
        "id": rule.id,
        "ticker": rule.ticker,
        "note": rule.note,
        "created_at": rule.created_at,
        "triggered_at": fired.fired_at if fired is not None else None,
        "triggered_price": fired.price if fired is not None else None,
    }
    if isinstance(c, PercentMove):
        return MarketAlert.model_validate(
            {
                **common,
                "kind": "percent_move",
                "percent": c.percent,
                "window_s": c.window_ms // 1000,
                "direction": c.direction,
            }
        )
    if isinstance(c, VolumeSpike):
        return MarketAlert.model_validate(
            {
                **common,
                "kind": "volume_spike",
                "timeframe": c.timeframe,
                "multiple": c.multiple,
                "lookback": c.lookback,
            }
        )
    return None


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
        t, cond, level = checked(ticker, condition, price)
        if len(self.active()) >= self.MAX_ACTIVE:
            raise AlertError(f"at most {self.MAX_ACTIVE} active alerts; delete some first")
        alert = Alert(
            id=uuid.uuid4().hex[:12],
            ticker=t,
            condition=cond,
            price=level,
            note=note[:500],
            created_at=int(time.time() * 1000),
        )
        self._alerts[alert.id] = alert
        self._save()
        return alert

    def mirror(self, alerts: list[Alert]) -> None:
        """Keep ``alerts`` (what the platform holds) as this book's whole content."""
        self._alerts = {a.id: a for a in alerts}
        self._save()

    def put(self, alert: Alert) -> None:
        self._alerts[alert.id] = alert
        self._save()

    def discard(self, alert_id: str) -> None:
        if self._alerts.pop(alert_id, None) is not None:
            self._save()

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
