"""The PyFlink job on the mini-cluster against the local runner's pure path, on one fixture.

The fixture (:mod:`tests.flink.fixture`) holds duplicates from two ingestors, out-of-order
ticks within the lateness, ticks beyond it, a quiet ticker and a lagging one; the closed
candles of every timeframe must be the ones the local runner's ``CandleBook`` makes.
"""

from __future__ import annotations

from collections import Counter

from dexorder.markets import ALL_TIMEFRAMES
from dexorder.schemas import Candle, Tick
from dexorder.topics import ohlc_topic
from streaming.candles import CandleBook
from tests.flink import fixture
from tests.flink.conftest import FlinkRun


def local_candles(ticks: list[Tick]) -> list[Candle]:
    """The local runner's fold of ``ticks``, every candle closed at the end of the input."""
    book = CandleBook(fixture.LATENESS_MS)
    for tick in ticks:
        book.add(tick)
    for ticker in sorted(book.tickers):
        book.advance(ticker, 2**61)
    return book.drain()


def _key(c: Candle) -> tuple[str, str, int]:
    return (c.ticker, c.timeframe, c.open_time)


def test_closed_candles_match_the_local_runner(flink_run: FlinkRun) -> None:
    expected = sorted(local_candles(flink_run.ticks), key=_key)
    got = sorted(flink_run.candles, key=_key)
    assert {c.timeframe for c in got} == {tf.value for tf in ALL_TIMEFRAMES}
    # each candle once: nothing repeated across checkpoints or the end of the input
    assert len({_key(c) for c in got}) == len(got)
    assert got == expected
    # the cases are in there: the lagging feed whole, the quiet ticker closed
    tickers = Counter(c.ticker for c in got if c.timeframe == "1m")
    assert tickers["KRAKEN:XRP/USD"] >= 149
    assert tickers["BINANCE:DOGE/USDT"] == 10
    volume = {c.ticker: c.trades for c in got if c.timeframe == "1d"}
    sent = Counter(t.ticker for t in flink_run.ticks)
    assert volume["BINANCE:ETH/USDT"] * 2 == sent["BINANCE:ETH/USDT"]  # duplicates once
    assert (
        sum(c.trades for c in got if c.ticker == "BINANCE:BTC/USDT" and c.timeframe == "1d")
        < (sent["BINANCE:BTC/USDT"])
    )  # the late ones dropped


def test_candles_reach_the_relay_with_the_stream_key(flink_run: FlinkRun) -> None:
    received = flink_run.relay.wait_closed(len(flink_run.candles), timeout_s=30)
    closed = [(t, c) for t, c in received if c.closed]
    assert sorted((c for _, c in closed), key=_key) == sorted(flink_run.candles, key=_key)
    assert all(t == ohlc_topic(c.ticker, c.timeframe) for t, c in received)
    live = [c for _, c in received if not c.closed]
    # open-candle updates of every timeframe went out too
    assert {c.timeframe for c in live} == {tf.value for tf in ALL_TIMEFRAMES}
