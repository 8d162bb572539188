"""Wire messages between the parts, encoded as MessagePack with msgspec.

Every message carries its ``type`` tag and the schema version ``v``. Readers
accept messages with unknown extra fields (forward compatible) and fill
defaults for missing optional ones (backward compatible); a change that
breaks either direction must bump :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_VERSION = 1

Side = Literal["buy", "sell"]


class Message(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=False):
    """Base of every wire message."""

    v: int = SCHEMA_VERSION


class Tick(Message, tag="tick"):
    """One exchange trade, as ingested. ``ts`` is the exchange's trade time (ms)."""

    exchange: str
    symbol: str
    trade_id: str
    price: float
    amount: float
    ts: int
    side: Side | None = None

    @property
    def ticker(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class Candle(Message, tag="candle"):
    """OHLCV over ``[open_time, open_time + timeframe)``; ``closed`` once final."""

    exchange: str
    symbol: str
    timeframe: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    closed: bool = False

    @property
    def ticker(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class RealtimeRequest(Message, tag="realtime_request"):
    """Ask the ingestors of ``ticker``'s exchange to stream its trades."""

    ticker: str


class BackfillRequest(Message, tag="backfill_request"):
    """Ask for history of ``ticker`` at ``timeframe`` over ``[start, end)`` (ms)."""

    request_id: str
    ticker: str
    timeframe: str
    start: int
    end: int


class WorkItem(Message, tag="work_item"):
    """Work the relay hands to the ingestors of one exchange (PUB, topic = ``EXCHANGE:``)."""

    kind: Literal["realtime", "backfill"]
    ticker: str
    request_id: str | None = None
    timeframe: str | None = None
    start: int | None = None
    end: int | None = None


#: One OHLCV row: open time (ms), open, high, low, close, volume, trades.
OhlcRow = tuple[int, float, float, float, float, float, int]


class OhlcBatch(Message, tag="ohlc_batch"):
    """A page of history fetched for a backfill (Kafka ``market.ohlc.backfill``)."""

    request_id: str
    ticker: str
    timeframe: str
    rows: list[OhlcRow]


class BackfillDone(Message, tag="backfill_done"):
    """The ingestor finished a backfill: every batch of it is already in Kafka before this."""

    request_id: str
    ticker: str
    timeframe: str
    start: int
    end: int
    fetched: int = 0
    #: ranges the exchange itself has no candles for
    gaps: list[tuple[int, int]] = []
    error: str | None = None


class HistoryProgress(Message, tag="history_progress"):
    """How far a backfill's fetching got (``fetched`` of ``total`` candles)."""

    request_id: str
    fetched: int
    total: int


class Ack(Message, tag="ack"):
    """The relay accepted a request."""

    request_id: str | None = None


class ErrorReply(Message, tag="error"):
    """A request was refused; ``code`` is machine-readable, ``message`` for people."""

    code: str
    message: str
    request_id: str | None = None


class HistoryReady(Message, tag="history_ready"):
    """A backfill finished (or failed: ``error`` set).

    ``rows`` candles of the range ``[start, end)`` are in the lake; ``gaps``
    are ranges the exchange itself has no candles for.
    """

    request_id: str
    ticker: str
    timeframe: str
    rows: int = 0
    start: int | None = None
    end: int | None = None
    gaps: list[tuple[int, int]] = []
    error: str | None = None


class UserEvent(Message, tag="user_event"):
    """Something to tell a person: a fill, a triggered alert, a confirmation to give.

    Critical events go from the agent's DEALER to the gateway's ROUTER and are
    re-sent until acknowledged with an :class:`EventAck` of the same
    ``event_id``; the gateway delivers each ``event_id`` once.
    """

    event_id: str
    user: str
    kind: str
    critical: bool = False
    created_at: int = 0
    payload: dict[str, object] = {}
    #: The sending agent's token for ``user`` (added when sent, never stored): the
    #: gateway refuses an event whose token names someone else.
    auth: str = ""


class EventAck(Message, tag="event_ack"):
    """The gateway has delivered (or durably taken) the event ``event_id``."""

    event_id: str


AnyMessage = (
    Tick
    | Candle
    | OhlcBatch
    | BackfillDone
    | HistoryProgress
    | RealtimeRequest
    | BackfillRequest
    | WorkItem
    | Ack
    | ErrorReply
    | HistoryReady
    | UserEvent
    | EventAck
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyMessage] = msgspec.msgpack.Decoder(AnyMessage)
_tick_decoder = msgspec.msgpack.Decoder(Tick)
_candle_decoder = msgspec.msgpack.Decoder(Candle)


class InvalidMessage(ValueError):
    """Bytes that are not a valid message of the expected kind."""


def encode(msg: Message) -> bytes:
    """Encode any message to MessagePack."""
    return _encoder.encode(msg)


def decode(data: bytes) -> AnyMessage:
    """Decode any message; raise :class:`InvalidMessage` with the reason."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(str(exc)) from None


def decode_tick(data: bytes) -> Tick:
    """Decode a :class:`Tick` (hot path of the stream runner)."""
    try:
        return _tick_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(str(exc)) from None


def decode_candle(data: bytes) -> Candle:
    """Decode a :class:`Candle`."""
    try:
        return _candle_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(str(exc)) from None
