"""Tickers, timeframes and message encoding."""

from __future__ import annotations

import msgspec
import pytest

from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.schemas import (
    SCHEMA_VERSION,
    Candle,
    InvalidMessage,
    Tick,
    decode,
    decode_tick,
    encode,
)
from dexorder.topics import history_ready_topic, ohlc_topic, tick_topic, work_topic


def test_ticker_parse_and_format() -> None:
    t = Ticker.parse(" binance:btc/usdt ")
    assert (t.exchange, t.base, t.quote, t.symbol) == ("BINANCE", "BTC", "USDT", "BTC/USDT")
    assert str(t) == "BINANCE:BTC/USDT"


@pytest.mark.parametrize(
    "bad", ["BTC/USDT", "BINANCE:BTCUSDT", "BINANCE:", ":BTC/USDT", "B N:B/Q", ""]
)
def test_bad_tickers(bad: str) -> None:
    with pytest.raises(InvalidTicker, match="EXCHANGE:BASE/QUOTE"):
        Ticker.parse(bad)


def test_timeframes() -> None:
    assert [t.value for t in Timeframe] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert Timeframe.parse("4h").ms == 4 * 3_600_000
    with pytest.raises(InvalidTimeframe, match="1m 5m 15m 1h 4h 1d"):
        Timeframe.parse("2h")


def test_topics() -> None:
    assert tick_topic("BINANCE:BTC/USDT") == "BINANCE:BTC/USDT|tick"
    assert ohlc_topic("BINANCE:BTC/USDT", "1m") == "BINANCE:BTC/USDT|ohlc:1m"
    assert work_topic("binance") == "BINANCE:"
    assert history_ready_topic("abc") == "HISTORY_READY:abc"


def test_round_trip_and_version() -> None:
    tick = Tick(exchange="BINANCE", symbol="BTC/USDT", trade_id="1", price=1.5, amount=2, ts=3)
    assert decode(encode(tick)) == tick
    assert tick.v == SCHEMA_VERSION
    raw = msgspec.msgpack.decode(encode(tick))
    assert raw["type"] == "tick"


def test_forward_compatible_extra_fields() -> None:
    raw = msgspec.msgpack.decode(
        encode(
            Candle(
                exchange="X",
                symbol="A/B",
                timeframe="1m",
                open_time=0,
                open=1,
                high=1,
                low=1,
                close=1,
                volume=1,
                trades=1,
            )
        )
    )
    raw["vwap"] = 1.0  # a field a newer writer added
    assert isinstance(decode(msgspec.msgpack.encode(raw)), Candle)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode({"type": "tick"}),
        msgspec.msgpack.encode({"type": "nope"}),
    ],
)
def test_invalid_messages(data: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode(data)
    with pytest.raises(InvalidMessage):
        decode_tick(data)
