"""The chat protocol: the JSON frames of the chat WebSocket (``/api/chat/ws``), of the
HTTP chat answer (``/api/chat``), of ``dexorder chat`` and of what Telegram renders.

Every frame is a JSON object whose ``type`` names its kind. The client sends ``auth``
first (unless its upgrade request carries an ``Authorization`` header), then a
``message`` per thing it says; the server answers ``ready``, then per turn any of
``status``, ``token``, ``tool``, ``confirm``, ``candles``, ``image``, and ``reply`` (the
whole answer) or ``error``; ``event`` comes at any time. The web workspace also sends
``subscribe`` / ``unsubscribe`` for live market candles (``{ticker}|ohlc:{tf}``, tickers
the relay knows, a few per socket), answered ``subscribed`` then ``ohlc`` frames. A field
marked ``?`` may be absent; a reader ignores fields it does not know.

FRAMES (generated from the types by :func:`frame_table`; a test keeps it so):

→ ``auth``: token
    The caller's bearer token (session or platform token).
→ ``message``: text
    Something the person says to their agent.
→ ``subscribe``: topic
    Live candles of a market: ``topic`` is ``{ticker}|ohlc:{tf}`` (market data only).
→ ``unsubscribe``: topic
    No more updates of ``topic``.
← ``ready``: account
    The socket is authenticated; whose account it speaks for.
← ``status``: text
    What the platform is doing before the answer (starting the agent).
← ``token``: text
    A piece of the answer as the model writes it.
← ``tool``: name, state, arguments?, text?, error?
    A tool call's progress: ``start`` (with its arguments), ``progress`` (a line of
    text), ``done`` or ``error``.
← ``confirm``: order, text
    An order held until the person confirms it (their next message).
← ``candles``: ticker, timeframe, candles
    A candle chart: rows of open time (ms), open, high, low, close.
← ``image``: mime, caption, data
    A picture (a backtest's chart), base64 in ``data``.
← ``reply``: text, model, tokens, timings
    The turn's whole answer; ``timings`` says where its time went (ms).
← ``error``: status, text, retry_after?
    A refusal or failure, with the HTTP status it would have had.
← ``event``: kind, event_id, text, payload
    A fill, an alert or another event of the person's, as it happens.
← ``subscribed``: topic
    A ``subscribe`` was taken: ``ohlc`` frames of ``topic`` follow.
← ``ohlc``: topic, time, open, high, low, close, volume, closed
    A live candle of a subscribed topic (the open one as it changes, at most a few a
    second, and each one as it closes); ``time`` is its open time (ms).

``python -m dexorder.contracts.chat`` prints the JSON Schema of both unions.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

#: Any JSON value (``object``, annotated so the JSON Schema can say so).
JsonValue = Annotated[object, msgspec.Meta(description="any JSON value")]
#: A JSON object whose keys the protocol does not fix (a tool's arguments, an event's
#: payload): the sender's own shape, passed through.
JsonObject = dict[str, JsonValue]
#: One candle of a chart: open time (ms), open, high, low, close.
CandleRow = tuple[int, float, float, float, float]
ToolState = Literal["start", "progress", "done", "error"]


class Frame(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every chat frame; the tag is its ``type``."""


# --- client → server ------------------------------------------------------------------


class AuthFrame(Frame, tag="auth"):
    """The caller's bearer token (session or platform token)."""

    token: str


class MessageFrame(Frame, tag="message"):
    """Something the person says to their agent."""

    text: str


class SubscribeFrame(Frame, tag="subscribe"):
    """Live candles of a market: ``topic`` is ``{ticker}|ohlc:{tf}`` (market data only)."""

    topic: str


class UnsubscribeFrame(Frame, tag="unsubscribe"):
    """No more updates of ``topic``."""

    topic: str


# --- server → client ------------------------------------------------------------------


class Account(msgspec.Struct, kw_only=True):
    """The account a socket speaks for."""

    id: str
    email: str
    tier: str
    created_at: int


class ReadyFrame(Frame, tag="ready"):
    """The socket is authenticated; whose account it speaks for."""

    account: Account


class StatusFrame(Frame, tag="status"):
    """What the platform is doing before the answer (starting the agent)."""

    text: str


class TokenFrame(Frame, tag="token"):
    """A piece of the answer as the model writes it."""

    text: str


class ToolFrame(Frame, tag="tool"):
    """A tool call's progress: ``start`` (with its arguments), ``progress`` (a line of
    text), ``done`` or ``error``."""

    name: str
    state: ToolState
    arguments: JsonObject | UnsetType = UNSET
    text: str | UnsetType = UNSET
    error: str | UnsetType = UNSET


class ConfirmFrame(Frame, tag="confirm"):
    """An order held until the person confirms it (their next message)."""

    order: JsonObject
    text: str


class CandlesFrame(Frame, tag="candles"):
    """A candle chart: rows of open time (ms), open, high, low, close."""

    ticker: str
    timeframe: str
    candles: list[CandleRow]


class ImageFrame(Frame, tag="image"):
    """A picture (a backtest's chart), base64 in ``data``."""

    mime: str
    caption: str
    data: str


class ReplyFrame(Frame, tag="reply"):
    """The turn's whole answer; ``timings`` says where its time went (ms)."""

    text: str
    model: str
    tokens: int
    timings: dict[str, float]


class ErrorFrame(Frame, tag="error"):
    """A refusal or failure, with the HTTP status it would have had."""

    status: int
    text: str
    #: seconds to wait before asking again (present, maybe null, on a refused turn)
    retry_after: int | UnsetType | None = UNSET


class EventFrame(Frame, tag="event"):
    """A fill, an alert or another event of the person's, as it happens."""

    kind: str
    event_id: str
    text: str
    payload: JsonObject


class SubscribedFrame(Frame, tag="subscribed"):
    """A ``subscribe`` was taken: ``ohlc`` frames of ``topic`` follow."""

    topic: str


class OhlcFrame(Frame, tag="ohlc"):
    """A live candle of a subscribed topic (the open one as it changes, at most a few a
    second, and each one as it closes); ``time`` is its open time (ms)."""

    topic: str
    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool


ClientFrame = AuthFrame | MessageFrame | SubscribeFrame | UnsubscribeFrame
ServerFrame = (
    ReadyFrame
    | StatusFrame
    | TokenFrame
    | ToolFrame
    | ConfirmFrame
    | CandlesFrame
    | ImageFrame
    | ReplyFrame
    | ErrorFrame
    | EventFrame
    | SubscribedFrame
    | OhlcFrame
)
#: What a turn shows besides its text: the charts (HTTP answer, Telegram photos).
Attachment = CandlesFrame | ImageFrame
#: The frames of a turn an HTTP answer lists as its progress.
Progress = StatusFrame | ToolFrame | ConfirmFrame
#: Where a turn's frames go (a socket, the HTTP answer being collected, a Telegram chat).
FrameSink = Callable[[ServerFrame], Awaitable[None]]


class ChatRequest(msgspec.Struct, kw_only=True):
    """The HTTP chat question (``POST /api/chat``)."""

    message: str


class ChatAnswer(msgspec.Struct, kw_only=True):
    """The HTTP chat answer (``POST /api/chat``): the reply and what the turn showed."""

    reply: str
    model: str
    tokens: int
    attachments: list[Attachment]
    progress: list[Progress]


class InvalidFrame(ValueError):
    """A frame that is not one of the protocol's; the message says why."""


_encoder = msgspec.json.Encoder()
_server_decoder = msgspec.json.Decoder(ServerFrame)
_answer_decoder = msgspec.json.Decoder(ChatAnswer)


def encode(frame: Frame | ChatAnswer) -> str:
    """The JSON text of ``frame``."""
    return _encoder.encode(frame).decode()


def decode_server_frame(raw: str | bytes) -> ServerFrame:
    """A frame the server sent (:class:`InvalidFrame` if it is none)."""
    try:
        return _server_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidFrame(str(exc)) from None


def decode_answer(raw: str | bytes) -> ChatAnswer:
    """An HTTP chat answer (:class:`InvalidFrame` if it is none)."""
    try:
        return _answer_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidFrame(str(exc)) from None


def client_frame(value: object) -> ClientFrame:
    """The client frame of decoded JSON ``value`` (:class:`InvalidFrame` if it is none).

    ``value`` is what :func:`dexorder.json_input.decode_json` made of the frame's text:
    the doors' JSON rules (nesting, NUL, lone surrogates, bidi controls) are its job."""
    try:
        frame: ClientFrame = msgspec.convert(value, ClientFrame)
    except msgspec.ValidationError as exc:
        raise InvalidFrame(str(exc)) from None
    return frame


# --- documentation from the types -----------------------------------------------------


def _members(union: Any) -> tuple[type[Frame], ...]:
    return tuple(union.__args__)


def frame_table() -> str:
    """The module docstring's list of frames, made from the types: direction, ``type``,
    fields (``?``: may be absent), and the class's docstring."""
    rows = []
    for direction, union in (("→", ClientFrame), ("←", ServerFrame)):
        for cls in _members(union):
            info = msgspec.inspect.type_info(cls)
            assert isinstance(info, msgspec.inspect.StructType)
            fields = ", ".join(f"{f.name}{'' if f.required else '?'}" for f in info.fields)
            rows.append(f"{direction} ``{info.tag}``: {fields}")
            doc = " ".join((cls.__doc__ or "").split())
            rows.append(textwrap.fill(doc, 88, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(rows)


def json_schema() -> dict[str, object]:
    """The JSON Schema of the client and the server frames."""
    (client, server), components = msgspec.json.schema_components(
        (ClientFrame, ServerFrame), ref_template="#/$defs/{name}"
    )
    return {"client_frame": client, "server_frame": server, "$defs": components}


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
