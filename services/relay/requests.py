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
#: No market the platform serves has candles before 2009 (Bitcoin's first block): an
#: earlier start is a unit mistake (seconds for milliseconds) or a probe, never history.
EARLIEST_MS = 1_230_768_000_000  # 2009-01-01T00:00:00Z
#: An end this far past the current time is not a clock skew or a "to tomorrow" but a
#: mistake; nearer ends are cut to the last closed candle.
MAX_END_AHEAD_MS = 86_400_000
#: Most candles one backfill may ask for (about 3.8 years of 1m): a bigger range ties an
#: ingestor and the exchange's rate limit up for hours; split it into several requests.
MAX_BACKFILL_ROWS = 2_000_000


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
    if msg.start < 0 or msg.end < 0:
        return _error(
            "bad_range", "start and end are epoch milliseconds, never negative", request_id
        )
    if msg.start >= msg.end:
        return _error("bad_range", "start must be before end", request_id)
    if msg.start < EARLIEST_MS:
        return _error(
            "bad_range",
            f"start {msg.start} is before 2009-01-01 ({EARLIEST_MS} ms): no market has candles "
            "that old (are these seconds rather than milliseconds?)",
            request_id,
        )
    last_closed_end = tf.floor(now_ms)  # the current candle is not final yet
    if msg.start >= last_closed_end:
        return _error("future_range", "the requested range has no closed candle yet", request_id)
    if msg.end > now_ms + MAX_END_AHEAD_MS:
        return _error(
            "bad_range", "end is more than a day in the future; ask up to now", request_id
        )
    rows = (min(msg.end, last_closed_end) - tf.floor(msg.start)) // tf.ms
    if rows > MAX_BACKFILL_ROWS:
        return _error(
            "too_many_rows",
            f"the range holds {rows:,} {tf.value} candles, more than {MAX_BACKFILL_ROWS:,} "
            "in one request: split it",
            request_id,
        )
    item = WorkItem(
        kind="backfill",
        ticker=str(ticker),
        request_id=msg.request_id,
        timeframe=tf.value,
        start=msg.start,
        end=min(msg.end, last_closed_end),
    )
    return Outcome(Ack(request_id=msg.request_id), (topic, item))
