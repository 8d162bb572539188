"""Market rules: what a person asked the platform to watch for them.

A person's price alerts and resting paper orders are *rules* that the stream engine
evaluates (the local runner on one machine, the Flink job on a cluster), so that their
agent can sleep. This module is the contract every part shares: the gateway writes rules,
the engines read and fire them, the functions and the agent take fired ones.

Where they travel (names in :mod:`dexorder.topics`):

- ``market.rules`` (compacted, keyed by rule id): each record's value is a
  :class:`RuleRecord` as JSON: an active rule, or the same rule with ``fired`` set once
  it fired (so no engine fires it again after a restart, whatever it replays); a
  tombstone (no value) deletes it.
- A fired rule becomes a :class:`~dexorder.contracts.events.Notification` on
  ``notifications`` with ``event_id = fired_event_id(rule id)`` (the gateway delivers each
  event id once, so an engine replaying after a crash never makes a person see it twice)
  and ``payload`` the :class:`RuleFired`; an order rule's :class:`RuleFired` also goes
  to ``rules.fired`` (keyed by person), whose function wakes the person's agent to apply
  the fill.
- Live, each :class:`RuleFired` also goes to the relay fanout, sealed
  (:mod:`dexorder.rule_sealing`): on ``RULE:{tag}``, ``tag`` a keyed hash of the person,
  the JSON AES-GCM-sealed under the platform secret. The fanout is one for everyone (an
  agent's subscriber key reads every topic), so neither the person nor the rule travels
  there in clear; only platform parts holding ``relay.rule_seal_key`` open it.

Evaluation (the same pure code in both engines, :mod:`streaming.rules`): rules look at the
ticks the candle book *accepted* (not duplicate, not late), per ticker in arrival order,
and at closed candles; only ticks at or after a rule's ``created_at`` (event time) can
fire it. A rule fires at most once.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

import msgspec

from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe

Side = Literal["buy", "sell"]

#: A rule id: what a person's agent or the gateway made (letters, digits, ``-_.:``).
RULE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
_RULE_ID = re.compile(RULE_ID_PATTERN)
MAX_WINDOW_MS = 86_400_000
MAX_LOOKBACK = 500

Positive = Annotated[float, msgspec.Meta(gt=0)]


class PriceCross(msgspec.Struct, tag="price_cross", kw_only=True):
    """Fires on the first tick at or above (``above``) / at or below (``below``) ``level``."""

    direction: Literal["above", "below"]
    level: Positive


class PercentMove(msgspec.Struct, tag="percent_move", kw_only=True):
    """Fires when the price moved ``percent`` % within ``window_ms``: a tick at or above
    (1 + p) times the lowest price of the window (``up``), at or below (1 - p) times the highest
    (``down``), or either. The window holds the accepted ticks of the last ``window_ms``
    of event time before the tick, the tick included."""

    percent: Annotated[float, msgspec.Meta(gt=0, le=1000)]
    window_ms: Annotated[int, msgspec.Meta(ge=1000, le=MAX_WINDOW_MS)]
    direction: Literal["up", "down", "either"] = "either"


class VolumeSpike(msgspec.Struct, tag="volume_spike", kw_only=True):
    """Fires on a closed candle of ``timeframe`` whose volume is above ``multiple`` times the
    mean volume of the ``lookback`` closed candles before it (none fires before there are
    ``lookback`` of them)."""

    timeframe: str = "1m"
    multiple: Annotated[float, msgspec.Meta(gt=0, le=1000)]
    lookback: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOOKBACK)] = 20


class OrderTrigger(msgspec.Struct, tag="order", kw_only=True):
    """A resting paper order of the person's agent, waiting for its price.

    - ``limit`` buy fires at or below ``level``, sell at or above; it fills at ``level``,
      or at the tick's price when that is better;
    - ``take_profit`` is a limit that closes a position (the same prices);
    - ``stop_loss`` sell fires at or below ``level``, buy at or above; it fills at the
      tick's price (a market order once triggered).
    """

    order_id: Annotated[str, msgspec.Meta(pattern=RULE_ID_PATTERN)]
    order_type: Literal["limit", "stop_loss", "take_profit"]
    side: Side
    quantity: Positive
    level: Positive


Condition = PriceCross | PercentMove | VolumeSpike | OrderTrigger
RuleKind = Literal["price_cross", "percent_move", "volume_spike", "order"]


class Rule(msgspec.Struct, kw_only=True):
    """One person's rule on one ticker. ``created_at`` (epoch ms) is the event time from
    which ticks may fire it."""

    id: Annotated[str, msgspec.Meta(pattern=RULE_ID_PATTERN)]
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ticker: str
    condition: Condition
    created_at: Annotated[int, msgspec.Meta(ge=0)]
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""

    @property
    def kind(self) -> RuleKind:
        kind: RuleKind = type(self.condition).__struct_config__.tag  # type: ignore[assignment]
        return kind


class RuleFired(msgspec.Struct, kw_only=True):
    """A rule that fired: at the tick (or closed candle) of event time ``fired_at`` and
    ``price``. For a volume spike, ``volume`` and ``average`` say why; for an order rule,
    ``fill_price`` is the price the order fills at."""

    rule: Rule
    fired_at: int
    price: float
    fill_price: float | None = None
    volume: float | None = None
    average: float | None = None

    @property
    def event_id(self) -> str:
        return fired_event_id(self.rule.id)


class RuleRecord(msgspec.Struct, kw_only=True):
    """The value of a ``market.rules`` record: the rule, and how it fired once it did."""

    rule: Rule
    fired: RuleFired | None = None


class RuleList(msgspec.Struct, kw_only=True):
    """``GET /internal/rules``: a person's rules, each with its fired state."""

    rules: list[RuleRecord]


class RuleDeleted(msgspec.Struct, kw_only=True):
    """``DELETE /internal/rules/{id}``: the rule removed, as it was."""

    deleted: RuleRecord


class BadRule(ValueError):
    """A rule that is not one; the message is for the person (a 400, a tool error)."""


def fired_event_id(rule_id: str) -> str:
    """The notification event id of a rule's firing (one per rule: it fires once)."""
    return f"rule:{rule_id}"


def notification_kind(rule: Rule) -> str:
    """``order_triggered`` for a resting order's rule, ``alert`` for the others."""
    return "order_triggered" if isinstance(rule.condition, OrderTrigger) else "alert"


def check_rule(rule: Rule) -> Rule:
    """``rule`` with its ticker and timeframe in their canonical spelling; :class:`BadRule`
    when a field is out of range (what msgspec's constraints cannot say)."""
    try:
        ticker = str(Ticker.parse(rule.ticker))
    except InvalidTicker as exc:
        raise BadRule(str(exc)) from None
    cond = rule.condition
    if isinstance(cond, VolumeSpike):
        try:
            cond = msgspec.structs.replace(cond, timeframe=Timeframe.parse(cond.timeframe).value)
        except InvalidTimeframe as exc:
            raise BadRule(str(exc)) from None
    for name in ("level", "quantity", "percent", "multiple"):
        value = getattr(cond, name, 1.0)
        if not math.isfinite(value):
            raise BadRule(f"{name} must be a finite number")
    if not _RULE_ID.match(rule.id):
        raise BadRule(f"invalid rule id {rule.id!r}")
    return msgspec.structs.replace(rule, ticker=ticker, condition=cond)


_json = msgspec.json.Encoder()
_record = msgspec.json.Decoder(RuleRecord)
_fired = msgspec.json.Decoder(RuleFired)


def encode_record(record: RuleRecord) -> bytes:
    return _json.encode(record)


def decode_record(data: bytes) -> RuleRecord:
    """A ``market.rules`` value, checked (:class:`BadRule` with the reason)."""
    try:
        record = _record.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRule(f"not a rule record: {exc}") from None
    return msgspec.structs.replace(record, rule=check_rule(record.rule))


def convert_rule(value: object) -> Rule:
    """A rule from JSON already decoded (a request body); :class:`BadRule` with the reason."""
    try:
        rule = msgspec.convert(value, Rule)
    except msgspec.ValidationError as exc:
        raise BadRule(f"not a rule: {exc}") from None
    return check_rule(rule)


_list = msgspec.json.Decoder(RuleList)
_deleted = msgspec.json.Decoder(RuleDeleted)


def encode_answer(answer: RuleRecord | RuleList | RuleDeleted) -> bytes:
    """The JSON of a gateway rules endpoint's answer."""
    return _json.encode(answer)


def decode_list(data: bytes) -> RuleList:
    """``GET /internal/rules``'s answer; :class:`BadRule` if it is not one."""
    try:
        return _list.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRule(f"not a rule list: {exc}") from None


def decode_deleted(data: bytes) -> RuleDeleted:
    try:
        return _deleted.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRule(f"not a deleted rule: {exc}") from None


def encode_fired(fired: RuleFired) -> bytes:
    return _json.encode(fired)


def decode_fired(data: bytes | str) -> RuleFired:
    """A fired rule (``rules.fired``, a notification's payload); :class:`BadRule` if not."""
    try:
        fired = _fired.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRule(f"not a fired rule: {exc}") from None
    return msgspec.structs.replace(fired, rule=check_rule(fired.rule))
