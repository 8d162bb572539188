"""The relay's request handling, without sockets."""

from __future__ import annotations

from dexorder.schemas import Ack, BackfillRequest, ErrorReply, RealtimeRequest, WorkItem, encode
from services.relay.requests import MAX_REQUEST_BYTES, handle_request

EXCHANGES = frozenset({"BINANCE"})
NOW = 1_800_000_000_000


def test_realtime_request() -> None:
    out = handle_request(encode(RealtimeRequest(ticker="binance:btc/usdt")), EXCHANGES, NOW)
    assert out.reply == Ack()
    assert out.work == ("BINANCE:", WorkItem(kind="realtime", ticker="BINANCE:BTC/USDT"))


def test_backfill_request_end_clipped_to_now() -> None:
    req = BackfillRequest(
        request_id="r", ticker="BINANCE:BTC/USDT", timeframe="1h", start=NOW - 10, end=NOW + 1000
    )
    out = handle_request(encode(req), EXCHANGES, NOW)
    assert out.reply == Ack(request_id="r")
    assert out.work is not None and out.work[1].end == NOW - NOW % 3_600_000  # closed candles


def test_oversized_request() -> None:
    out = handle_request(b"x" * (MAX_REQUEST_BYTES + 1), EXCHANGES, NOW)
    assert isinstance(out.reply, ErrorReply) and out.reply.code == "too_large" and out.work is None


def test_error_carries_request_id() -> None:
    req = BackfillRequest(
        request_id="r9", ticker="BINANCE:BTC/USDT", timeframe="1m", start=NOW + 5, end=NOW + 10
    )
    out = handle_request(encode(req), EXCHANGES, NOW)
    assert isinstance(out.reply, ErrorReply)
    assert (out.reply.code, out.reply.request_id) == ("future_range", "r9")
