"""Threat: a history request with a negative or absurd range ties up the ingestors.

Anyone may ask the relay's ROUTER for history. A negative start, one before any market
existed, an end in the year 3000 or a range of millions of candles used to become work
for an ingestor (paging the exchange for hours, burning the platform's rate limit), or
an exception deeper down. Each is refused at once with an ``ErrorReply`` saying why.
"""

from __future__ import annotations

import pytest

from dexorder.client import request
from dexorder.schemas import BackfillRequest, ErrorReply, encode
from launcher.ephemeral import RunningPlatform
from services.relay.requests import EARLIEST_MS, MAX_BACKFILL_ROWS, handle_request

EXCHANGES = frozenset({"BINANCE"})
NOW = 1_800_000_000_000  # 2027-01-15
DAY = 86_400_000


def backfill(start: int, end: int, timeframe: str = "1m") -> BackfillRequest:
    return BackfillRequest(
        request_id="r", ticker="BINANCE:BTC/USDT", timeframe=timeframe, start=start, end=end
    )


@pytest.mark.parametrize(
    ("start", "end", "timeframe", "code", "says"),
    [
        (-DAY, NOW - DAY, "1h", "bad_range", "negative"),
        (NOW - 2 * DAY, -1, "1h", "bad_range", "negative"),
        (NOW - DAY, NOW - 2 * DAY, "1h", "bad_range", "before end"),
        (1_000, 2_000, "1m", "bad_range", "2009"),  # seconds mistaken for milliseconds
        (EARLIEST_MS - DAY, EARLIEST_MS + DAY, "1d", "bad_range", "2009"),
        (NOW - DAY, 32_503_680_000_000, "1h", "bad_range", "future"),  # the year 3000
        (NOW + DAY, NOW + 2 * DAY, "1m", "future_range", "no closed candle"),
        (EARLIEST_MS, NOW, "1m", "too_many_rows", "split"),  # 18 years of 1m
    ],
)
def test_absurd_ranges_are_refused(
    start: int, end: int, timeframe: str, code: str, says: str
) -> None:
    """Stops a negative, pre-2009, far-future or enormous range from becoming work."""
    out = handle_request(encode(backfill(start, end, timeframe)), EXCHANGES, NOW)
    assert isinstance(out.reply, ErrorReply), out.reply
    assert out.reply.code == code and says in out.reply.message, out.reply
    assert out.reply.request_id == "r"
    assert out.work is None


def test_sensible_ranges_still_become_work() -> None:
    """The limits leave real requests alone: a year of 1m, a range ending a little ahead."""
    year = handle_request(encode(backfill(NOW - 365 * DAY, NOW)), EXCHANGES, NOW)
    assert year.work is not None and year.work[1].start == NOW - 365 * DAY
    whole_history_daily = handle_request(encode(backfill(EARLIEST_MS, NOW, "1d")), EXCHANGES, NOW)
    assert whole_history_daily.work is not None
    ahead = handle_request(encode(backfill(NOW - DAY, NOW + DAY // 2, "1h")), EXCHANGES, NOW)
    assert ahead.work is not None
    end = ahead.work[1].end
    assert end is not None and end <= NOW  # cut to the last closed candle
    most = NOW - NOW % 60_000 - MAX_BACKFILL_ROWS * 60_000
    assert handle_request(encode(backfill(most, NOW)), EXCHANGES, NOW).work is not None
    one_more = handle_request(encode(backfill(most - 60_000, NOW)), EXCHANGES, NOW)
    assert isinstance(one_more.reply, ErrorReply) and one_more.reply.code == "too_many_rows"


@pytest.mark.integration
async def test_the_relay_refuses_absurd_ranges_over_its_socket(relay: RunningPlatform) -> None:
    """Stops absurd ranges at the real relay process, answered on the ROUTER at once."""
    r = relay.cfg.relay
    router = f"tcp://127.0.0.1:{r.router_port}"
    for start, end, code in (
        (-5, 10, "bad_range"),
        (1_000, 2_000, "bad_range"),
        (EARLIEST_MS, 32_503_680_000_000, "bad_range"),
        (EARLIEST_MS, EARLIEST_MS + (MAX_BACKFILL_ROWS + 10) * 60_000, "too_many_rows"),
    ):
        reply = await request(router, backfill(start, end))
        assert isinstance(reply, ErrorReply), (start, end, reply)
        assert reply.code == code and reply.message, reply
