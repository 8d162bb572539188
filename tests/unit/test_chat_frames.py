"""The chat protocol (dexorder/contracts/chat.py): every frame kind round-trips, and its
JSON is pinned to what the web page, ``dexorder chat`` and Telegram read."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from dexorder.contracts import chat
from dexorder.contracts.chat import (
    Account,
    AuthFrame,
    CandlesFrame,
    ChatAnswer,
    ConfirmFrame,
    ErrorFrame,
    EventFrame,
    Frame,
    ImageFrame,
    InvalidFrame,
    MessageFrame,
    OhlcFrame,
    ReadyFrame,
    ReplyFrame,
    StatusFrame,
    SubscribedFrame,
    SubscribeFrame,
    TokenFrame,
    ToolFrame,
    UnsubscribeFrame,
)
from dexorder.json_input import decode_json

ACCOUNT = Account(id="u-1", email="a@example.com", tier="free", created_at=1700000000)

#: Each server frame kind and the exact JSON object it is on the wire.
SERVER_FRAMES: list[tuple[Frame, dict[str, object]]] = [
    (
        ReadyFrame(account=ACCOUNT),
        {
            "type": "ready",
            "account": {
                "id": "u-1",
                "email": "a@example.com",
                "tier": "free",
                "created_at": 1700000000,
            },
        },
    ),
    (StatusFrame(text="Starting your agent…"), {"type": "status", "text": "Starting your agent…"}),
    (TokenFrame(text="Hel"), {"type": "token", "text": "Hel"}),
    (
        ToolFrame(name="get_candles", state="start", arguments={"ticker": "BINANCE:BTC/USDT"}),
        {
            "type": "tool",
            "name": "get_candles",
            "state": "start",
            "arguments": {"ticker": "BINANCE:BTC/USDT"},
        },
    ),
    (
        ToolFrame(name="get_candles", state="progress", text="loading"),
        {"type": "tool", "name": "get_candles", "state": "progress", "text": "loading"},
    ),
    (
        ToolFrame(name="get_candles", state="done"),
        {"type": "tool", "name": "get_candles", "state": "done"},
    ),
    (
        ToolFrame(name="x", state="error", error="boom"),
        {"type": "tool", "name": "x", "state": "error", "error": "boom"},
    ),
    (
        ConfirmFrame(order={"side": "buy", "quantity": 0.1}, text="buy 0.1 BTC"),
        {"type": "confirm", "order": {"side": "buy", "quantity": 0.1}, "text": "buy 0.1 BTC"},
    ),
    (
        CandlesFrame(
            ticker="BINANCE:BTC/USDT",
            timeframe="1h",
            candles=[(1704067200000, 1.0, 2.5, 0.5, 2.0)],
        ),
        {
            "type": "candles",
            "ticker": "BINANCE:BTC/USDT",
            "timeframe": "1h",
            "candles": [[1704067200000, 1.0, 2.5, 0.5, 2.0]],
        },
    ),
    (
        ImageFrame(mime="image/png", caption="Backtest", data="iVBORw0KGgo="),
        {"type": "image", "mime": "image/png", "caption": "Backtest", "data": "iVBORw0KGgo="},
    ),
    (
        ReplyFrame(text="Hello", model="offline", tokens=12, timings={"model_ms": 1.5}),
        {
            "type": "reply",
            "text": "Hello",
            "model": "offline",
            "tokens": 12,
            "timings": {"model_ms": 1.5},
        },
    ),
    (ErrorFrame(status=400, text="no"), {"type": "error", "status": 400, "text": "no"}),
    (
        # a refused turn says when to come back, null included (the page ignores it)
        ErrorFrame(status=429, text="slow down", retry_after=None),
        {"type": "error", "status": 429, "text": "slow down", "retry_after": None},
    ),
    (
        EventFrame(kind="alert", event_id="e-1", text="Alert: …", payload={"price": 1}),
        {
            "type": "event",
            "kind": "alert",
            "event_id": "e-1",
            "text": "Alert: …",
            "payload": {"price": 1},
        },
    ),
    (
        SubscribedFrame(topic="BINANCE:BTC/USDT|ohlc:1m"),
        {"type": "subscribed", "topic": "BINANCE:BTC/USDT|ohlc:1m"},
    ),
    (
        OhlcFrame(
            topic="BINANCE:BTC/USDT|ohlc:1m",
            time=1704067200000,
            open=1.0,
            high=2.5,
            low=0.5,
            close=2.0,
            volume=3.0,
            closed=False,
        ),
        {
            "type": "ohlc",
            "topic": "BINANCE:BTC/USDT|ohlc:1m",
            "time": 1704067200000,
            "open": 1.0,
            "high": 2.5,
            "low": 0.5,
            "close": 2.0,
            "volume": 3.0,
            "closed": False,
        },
    ),
]

CLIENT_FRAMES: list[tuple[Frame, dict[str, object]]] = [
    (AuthFrame(token="t"), {"type": "auth", "token": "t"}),
    (MessageFrame(text="hi"), {"type": "message", "text": "hi"}),
    (SubscribeFrame(topic="X:A/B|ohlc:1m"), {"type": "subscribe", "topic": "X:A/B|ohlc:1m"}),
    (UnsubscribeFrame(topic="X:A/B|ohlc:1m"), {"type": "unsubscribe", "topic": "X:A/B|ohlc:1m"}),
]


def _client_decode(text: str) -> Frame:
    return chat.client_frame(decode_json(text))  # as the WebSocket handler reads one


@pytest.mark.parametrize(
    ("frame", "wire", "decode"),
    [(f, w, chat.decode_server_frame) for f, w in SERVER_FRAMES]
    + [(f, w, _client_decode) for f, w in CLIENT_FRAMES],
    ids=lambda v: type(v).__name__ if isinstance(v, Frame) else "",
)
def test_frames_round_trip_with_their_json_pinned(
    frame: Frame, wire: dict[str, object], decode: Callable[[str], Frame]
) -> None:
    text = chat.encode(frame)
    assert json.loads(text) == wire
    assert decode(text) == frame
    assert decode(json.dumps(wire)) == frame


def test_every_frame_kind_is_pinned() -> None:
    pinned = {type(f) for f, _ in SERVER_FRAMES} | {type(f) for f, _ in CLIENT_FRAMES}
    assert pinned == set(chat.ServerFrame.__args__) | set(chat.ClientFrame.__args__)


def test_the_http_answer_round_trips() -> None:
    answer = ChatAnswer(
        reply="done",
        model="offline",
        tokens=3,
        attachments=[ImageFrame(mime="image/png", caption="c", data="AA==")],
        progress=[StatusFrame(text="s"), ToolFrame(name="t", state="done")],
    )
    wire = json.loads(chat.encode(answer))
    assert wire["attachments"] == [
        {"type": "image", "mime": "image/png", "caption": "c", "data": "AA=="}
    ]
    assert [p["type"] for p in wire["progress"]] == ["status", "tool"]
    assert chat.decode_answer(chat.encode(answer)) == answer


@pytest.mark.parametrize(
    "wire",
    [
        {"type": "message"},  # no text
        {"type": "message", "text": 3},
        {"type": "auth", "token": None},
        {"type": "reply", "text": "a server frame"},
        {"text": "no type"},
        ["not", "an", "object"],
    ],
)
def test_what_is_no_client_frame_is_refused(wire: object) -> None:
    with pytest.raises(InvalidFrame):
        chat.client_frame(wire)


def test_a_server_frame_of_no_known_kind_is_invalid() -> None:
    with pytest.raises(InvalidFrame):
        chat.decode_server_frame('{"type": "telepathy", "text": "x"}')
    with pytest.raises(InvalidFrame):
        chat.decode_server_frame('{"type": "tool", "name": "x", "state": "sleeping"}')


def test_the_documented_frames_are_the_types() -> None:
    assert chat.frame_table() in (chat.__doc__ or "")


def test_the_module_prints_the_json_schema_of_both_unions() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dexorder.contracts.chat"], capture_output=True, check=True
    ).stdout
    schema = json.loads(out)
    mapping = schema["server_frame"]["discriminator"]["mapping"]
    assert set(mapping) == {json.loads(chat.encode(f))["type"] for f, _ in SERVER_FRAMES}
    assert set(schema["client_frame"]["discriminator"]["mapping"]) == {
        "auth",
        "message",
        "subscribe",
        "unsubscribe",
    }
    assert "ToolFrame" in schema["$defs"]
