"""The web workspace's live candles (gateway/live.py): which topics a page may follow,
and how a socket's updates are coalesced."""

from __future__ import annotations

import pytest

from dexorder.contracts.chat import OhlcFrame
from gateway.live import BadTopic, Coalescer, parse_topic

BTC_1M = "BINANCE:BTC/USDT|ohlc:1m"


def bar(t: int, close: float, closed: bool = False, topic: str = BTC_1M) -> OhlcFrame:
    return OhlcFrame(
        topic=topic,
        time=t,
        open=1,
        high=close,
        low=1,
        close=close,
        volume=1,
        closed=closed,
    )


def test_topics_are_market_candles_only() -> None:
    assert parse_topic("binance:btc/usdt|ohlc:1m") == BTC_1M
    for bad in (
        "EVENT:u1|alert",
        "RULE:x",
        "BINANCE:BTC/USDT|tick",
        "BINANCE:BTC/USDT",
        "|ohlc:1m",
    ):
        with pytest.raises(BadTopic):
            parse_topic(bad)
    with pytest.raises(BadTopic, match="timeframe"):
        parse_topic("BINANCE:BTC/USDT|ohlc:7m")


def test_the_coalescer_keeps_the_newest_update_and_every_closed_candle() -> None:
    c = Coalescer(interval_s=0.25)
    c.offer(bar(0, 2))
    c.offer(bar(0, 3))
    assert c.due(10.0) == [bar(0, 3)]
    c.offer(bar(0, 4, closed=True))
    c.offer(bar(60_000, 5))
    c.offer(bar(60_000, 6))
    assert c.due(10.1) == []  # too soon after the last send
    assert c.next_due(10.1) == pytest.approx(0.15)
    assert c.due(10.25) == [bar(0, 4, closed=True), bar(60_000, 6)]
    assert c.next_due(10.3) is None
