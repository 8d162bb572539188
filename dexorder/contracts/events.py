"""CloudEvent payloads: the data of each event a platform function takes, one type and
one decode per event type, shared by the functions (``functions/*/main.py``) and the
local trigger dispatcher (``triggers/dispatcher.py``, which refuses what the function
would refuse without delivering it).

- ``notifications``: :class:`Notification`, by :func:`decode_notification`;
- ``backfill.requests``: :class:`BackfillCall`, by :func:`decode_backfill` (into the
  relay's :class:`~dexorder.schemas.BackfillRequest`, ticker and timeframe checked);
- ``tool.calls``: :class:`ToolCall` (CloudEvent type ``dexorder.tool.call``), by
  :func:`decode_tool_call`; its answer on ``tool.results`` is a :class:`ToolResult`
  (type ``dexorder.tool.result``);
- ``rules.fired``: a fired order rule, :class:`~dexorder.contracts.rules.RuleFired`, by
  :func:`decode_rule_fired` (only order rules travel there).

The data is read with the doors' JSON rules (:mod:`dexorder.json_input`: no deep
nesting, NUL, lone surrogates or bidi controls) whether it arrives as bytes or already
parsed by functions-framework; what fails is a :class:`BadEvent` (an HTTP 400, never
retried). The record signature (:mod:`dexorder.record_signing`) is checked before any of
this, as it always was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

import msgspec

from dexorder.contracts.chat import JsonObject, JsonValue
from dexorder.contracts.rules import BadRule, OrderTrigger, RuleFired, check_rule
from dexorder.json_input import UnsafeInput, check_value, decode_json
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.schemas import BackfillRequest
from dexorder.topics import BACKFILL_REQUESTS, NOTIFICATIONS, RULES_FIRED, TOOL_CALLS

TOOL_CALL_TYPE = "dexorder.tool.call"
TOOL_RESULT_TYPE = "dexorder.tool.result"


class BadEvent(ValueError):
    """Event data that is not its type's; the message says why (answered 400)."""

    status = 400


class Notification(msgspec.Struct, kw_only=True):
    """Something to tell a person (``notifications``): the gateway delivers it to their
    channels once per ``event_id``."""

    event_id: str
    user: str
    kind: str
    payload: JsonObject = {}
    created_at: int = 0


class BackfillCall(msgspec.Struct, kw_only=True):
    """A request for history (``backfill.requests``): ``ticker`` at ``timeframe`` over
    ``[start, end)`` (epoch ms); a ``request_id`` is made when none is given."""

    ticker: str
    timeframe: str
    start: int
    end: int
    request_id: str | None = None


class ToolCall(msgspec.Struct, kw_only=True):
    """A call of one tool of a person's agent (``tool.calls``), made with their own token
    (which names whose agent it is; none is a 401, not a 400)."""

    tool: str
    arguments: JsonObject | None = None
    token: str = ""


class ToolResult(msgspec.Struct, kw_only=True):
    """What the tool proxy answers a :class:`ToolCall` with (``tool.results``)."""

    tool: str
    is_error: bool
    result: JsonValue


T = TypeVar("T", bound=msgspec.Struct)
EventData = Notification | BackfillCall | ToolCall | ToolResult

_encoder = msgspec.json.Encoder()


def encode_event(data: EventData) -> bytes:
    """The JSON of an event's data (a record value, a CloudEvent's body)."""
    return _encoder.encode(data)


def event_json(data: object) -> object:
    """``data`` (a CloudEvent's: bytes or text, or JSON functions-framework already
    parsed) as a JSON value that passed the doors' rules; :class:`BadEvent` if not."""
    try:
        if isinstance(data, bytes | str):
            return decode_json(data)
        return check_value(data)
    except UnsafeInput as exc:
        raise BadEvent(f"the event data is refused: {exc}") from None


def _decode(data: object, kind: type[T], what: str) -> T:
    value = event_json(data)
    if not isinstance(value, dict):
        raise BadEvent(f"{what} must be a JSON object")
    try:
        # not strict: numbers written as strings ("start": "1704067200000") are taken
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise BadEvent(f"not {what}: {exc}") from None


def decode_notification(data: object) -> Notification:
    return _decode(data, Notification, "a notification")


def decode_backfill(data: object) -> BackfillRequest:
    """The relay request a backfill event asks for (ticker and timeframe checked)."""
    call = _decode(data, BackfillCall, "a backfill request")
    try:
        ticker = str(Ticker.parse(call.ticker))
        timeframe = Timeframe.parse(call.timeframe).value
    except (InvalidTicker, InvalidTimeframe) as exc:
        raise BadEvent(str(exc)) from None
    if call.end <= call.start:
        raise BadEvent("start must be before end")
    return BackfillRequest(
        request_id=call.request_id or uuid.uuid4().hex,
        ticker=ticker,
        timeframe=timeframe,
        start=call.start,
        end=call.end,
    )


def decode_tool_call(data: object) -> ToolCall:
    return _decode(data, ToolCall, "a tool call")


def decode_rule_fired(data: object) -> RuleFired:
    """A fired order rule (``rules.fired``), its rule checked."""
    fired = _decode(data, RuleFired, "a fired rule")
    try:
        fired = msgspec.structs.replace(fired, rule=check_rule(fired.rule))
    except BadRule as exc:
        raise BadEvent(str(exc)) from None
    if not isinstance(fired.rule.condition, OrderTrigger):
        raise BadEvent(f"rule {fired.rule.id} is not an order's: nothing to apply")
    return fired


#: The decode of each topic's events (what the dispatcher checks before delivering).
DECODERS: dict[str, Callable[[object], object]] = {
    NOTIFICATIONS: decode_notification,
    BACKFILL_REQUESTS: decode_backfill,
    TOOL_CALLS: decode_tool_call,
    RULES_FIRED: decode_rule_fired,
}


def check_record(topic: str, value: bytes) -> None:
    """:class:`BadEvent` unless a record on ``topic`` carries its event type's data (a
    topic of no known event type passes)."""
    decode = DECODERS.get(topic)
    if decode is not None:
        decode(value)
