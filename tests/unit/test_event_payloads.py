"""CloudEvent payloads (dexorder/contracts/events.py): one decode per event type, good data
taken, malformed or unsafe data refused with a 400, as bytes or already parsed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dexorder.contracts.events import (
    BadEvent,
    Notification,
    ToolCall,
    ToolResult,
    check_record,
    decode_backfill,
    decode_notification,
    decode_tool_call,
    encode_event,
)
from dexorder.record_signing import ForgedRecord, RecordKeys, verify_record
from dexorder.schemas import BackfillRequest

NOTE = {"event_id": "n-1", "user": "u-1", "kind": "alert", "payload": {"price": 1}}
BACKFILL = {"ticker": "binance:btc/usdt", "timeframe": "1h", "start": 1, "end": 2}
CALL = {"token": "t", "tool": "list_strategies", "arguments": {"x": [1, 2]}}

#: the doors' JSON rules, for every event type
UNSAFE = [
    b"[" * 100_000 + b"]" * 100_000,  # a RecursionError for the standard decoder
    b'{"event_id": "a\\u0000"}',
    b'{"event_id": "\\ud800"}',
    b'{"event_id": "\\u202e"}',
    b'{"event_id": NaN}',
    b"\xff\xfe",
    b"not json",
    b"",
]
DECODERS: list[Callable[[object], object]] = [
    decode_notification,
    decode_backfill,
    decode_tool_call,
]


def both_forms(data: Mapping[str, object]) -> list[object]:
    """The data as a record value (bytes) and as functions-framework hands it (parsed)."""
    return [json.dumps(data).encode(), data]


@pytest.mark.parametrize("form", both_forms(NOTE), ids=["bytes", "parsed"])
def test_a_notification(form: object) -> None:
    note = decode_notification(form)
    assert note == Notification(event_id="n-1", user="u-1", kind="alert", payload={"price": 1})
    assert json.loads(encode_event(note)) == {**NOTE, "created_at": 0}


@pytest.mark.parametrize(
    "bad",
    [
        {"user": "u-1", "kind": "alert"},  # no event id
        {**NOTE, "user": 7},
        {**NOTE, "payload": ["not", "an", "object"]},
        ["a", "list"],
    ],
)
def test_a_malformed_notification_is_a_400(bad: object) -> None:
    with pytest.raises(BadEvent) as info:
        decode_notification(bad)
    assert info.value.status == 400


@pytest.mark.parametrize("form", both_forms(BACKFILL), ids=["bytes", "parsed"])
def test_a_backfill_request(form: object) -> None:
    request = decode_backfill(form)
    assert isinstance(request, BackfillRequest)
    assert (request.ticker, request.timeframe, request.start, request.end) == (
        "BINANCE:BTC/USDT",
        "1h",
        1,
        2,
    )
    assert request.request_id  # made when none is given
    assert decode_backfill({**BACKFILL, "request_id": "r-1"}).request_id == "r-1"
    assert decode_backfill({**BACKFILL, "start": "1", "end": "2"}).end == 2  # as before


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({**BACKFILL, "ticker": "NOPE"}, "NOPE"),
        ({**BACKFILL, "timeframe": "7m"}, "7m"),
        ({**BACKFILL, "end": 1}, "before end"),
        ({"ticker": "BINANCE:BTC/USDT", "timeframe": "1h"}, "start"),
        ({**BACKFILL, "start": "soon"}, "start"),
    ],
)
def test_a_malformed_backfill_request_is_a_400_saying_why(bad: object, says: str) -> None:
    with pytest.raises(BadEvent, match=says):
        decode_backfill(bad)


@pytest.mark.parametrize("form", both_forms(CALL), ids=["bytes", "parsed"])
def test_a_tool_call(form: object) -> None:
    assert decode_tool_call(form) == ToolCall(
        tool="list_strategies", arguments={"x": [1, 2]}, token="t"
    )
    # no token is the proxy's 401 (an invalid token), not a malformed call
    assert decode_tool_call({"tool": "x"}) == ToolCall(tool="x")


@pytest.mark.parametrize("bad", [{"token": "t"}, {**CALL, "arguments": [1]}, {**CALL, "tool": 1}])
def test_a_malformed_tool_call_is_a_400(bad: object) -> None:
    with pytest.raises(BadEvent):
        decode_tool_call(bad)


def test_a_tool_result_encodes_what_the_proxy_answered() -> None:
    result = ToolResult(tool="t", is_error=False, result={"strategies": ["sma_cross"]})
    assert json.loads(encode_event(result)) == {
        "tool": "t",
        "is_error": False,
        "result": {"strategies": ["sma_cross"]},
    }


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("raw", UNSAFE, ids=range(len(UNSAFE)))
def test_unsafe_data_is_a_400_for_every_event_type(
    decode: Callable[[object], object], raw: bytes
) -> None:
    with pytest.raises(BadEvent) as info:
        decode(raw)
    assert info.value.status == 400


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
def test_unsafe_text_already_parsed_is_refused_too(decode: Callable[[object], object]) -> None:
    with pytest.raises(BadEvent, match="bidirectional"):
        decode({"event_id": "\u202e", "ticker": "\u202e", "tool": "\u202e"})


def test_records_are_checked_by_their_topics_event_type() -> None:
    check_record("notifications", json.dumps(NOTE).encode())
    check_record("backfill.requests", json.dumps(BACKFILL).encode())
    check_record("tool.calls", json.dumps(CALL).encode())
    check_record("market.ticks", b"\x00 anything: no event type of its own")
    with pytest.raises(BadEvent):
        check_record("notifications", json.dumps(CALL).encode())


def test_a_record_nested_too_deep_is_refused_not_a_crash() -> None:
    """The dispatcher checks every record's signature before anything else: a value that
    the standard decoder cannot parse (RecursionError) must be refused, not kill it."""
    keys = RecordKeys(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ForgedRecord, match="unsigned"):
        verify_record(keys, "notifications", b"[" * 100_000 + b"]" * 100_000, None)
