"""What the relay does with one client request: pure, no sockets.

A request is answered at once: an :class:`Ack` when it became work for the
ingestors (returned with the work item and its PUB topic), an
:class:`ErrorReply` otherwise. The relay keeps no state between requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.schemas import (
    Ack,
    BackfillRequest,
    ErrorReply,
    InvalidMessage,
    Message,
    RealtimeRequest,
    WorkItem,
    decode,
)
from dexorder.topics import work_topic

#: Largest request the relay reads; anything bigger is refused unread.
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: Message
    work: tuple[str, WorkItem] | None = None


def _error(code: str, message: str, request_id: str | None = None) -> Outcome:
    return Outcome(ErrorReply(code=code, message=message, request_id=request_id))


def handle_request(payload: bytes, exchanges: frozenset[str], now_ms: int) -> Outcome:
    """Validate one request and turn it into work for the ingestors."""
    if len(payload) > MAX_REQUEST_BYTES:
        return _error("too_large", f"request of {len(payload)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        msg = decode(payload)
    except InvalidMessage as exc:
        return _error("malformed", f"not a valid request: {exc}")
    request_id = getattr(msg, "request_id", None)
    if not isinstance(msg, RealtimeRequest | BackfillRequest):
        return _error(
            "unsupported", f"the relay does not take {type(msg).__name__} requests", request_id
        )
    try:
        ticker = Ticker.parse(msg.ticker)
    except InvalidTicker as exc:
        return _error("bad_ticker", str(exc), request_id)
    if ticker.exchange not in exchanges:
        known = ", ".join(sorted(exchanges))
        return _error(
            "unknown_exchange", f"no ingestor serves {ticker.exchange} (known: {known})", request_id
        )
    topic = work_topic(ticker.exchange)
    if isinstance(msg, RealtimeRequest):
        return Outcome(Ack(), (topic, WorkItem(kind="realtime", ticker=str(ticker))))
    try:
        tf = Timeframe.parse(msg.timeframe)
    except InvalidTimeframe as exc:
        return _error("bad_timeframe", str(exc), request_id)
    if not msg.request_id:
        return _error("bad_request", "request_id is required", request_id)
    if msg.start >= msg.end:
        return _error("bad_range", "start must be before end", request_id)
    last_closed_end = tf.floor(now_ms)  # the current candle is not final yet
    if msg.start >= last_closed_end:
        return _error("future_range", "the requested range has no closed candle yet", request_id)
    item = WorkItem(
        kind="backfill",
        ticker=str(ticker),
        request_id=msg.request_id,
        timeframe=tf.value,
        start=msg.start,
        end=min(msg.end, last_closed_end),
    )
    return Outcome(Ack(request_id=msg.request_id), (topic, item))
