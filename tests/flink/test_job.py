"""Parity: the PyFlink job on the mini-cluster against the local runner's pure path.

One fixture (:mod:`tests.flink.fixture`) holds duplicates from two ingestors, out-of-order
ticks within the lateness, ticks beyond it, a quiet ticker, a lagging one, and price paths
that fire every rule kind once; the closed candles of every timeframe and the fired rules
must be the ones :func:`streaming.engine.fold` (what the local runner does per tick) makes.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from dexorder.contracts.rules import RuleFired
from dexorder.market_validation import candle_problem
from dexorder.markets import ALL_TIMEFRAMES
from dexorder.schemas import Candle
from dexorder.topics import ohlc_topic
from streaming.engine import Folded, fold
from tests.flink import fixture
from tests.flink.conftest import FlinkRun

# the mini-cluster takes both cores for its run: alone, after the parallel tests
pytestmark = pytest.mark.solo


@pytest.fixture(scope="module")
def local(flink_run: FlinkRun) -> Folded:
    return fold(flink_run.ticks, flink_run.rules, fixture.LATENESS_MS)


def _key(c: Candle) -> tuple[str, str, int]:
    return (c.ticker, c.timeframe, c.open_time)


def _by_rule(fired: list[RuleFired]) -> list[RuleFired]:
    return sorted(fired, key=lambda f: f.rule.id)


def test_closed_candles_match_the_local_runner(flink_run: FlinkRun, local: Folded) -> None:
    got = sorted(flink_run.candles, key=_key)
    assert {c.timeframe for c in got} == {tf.value for tf in ALL_TIMEFRAMES}
    # each candle once: nothing repeated across checkpoints or the end of the input
    assert len({_key(c) for c in got}) == len(got)
    # what the local runner publishes: every candle it folds, once validated
    now = int(time.time() * 1000)
    published = [c for c in local.candles if candle_problem(c, now) is None]
    assert got == sorted(published, key=_key)
    assert {c.ticker for c in local.candles} - {c.ticker for c in got} == {"BINANCE:HUGE/USDT"}
    # the cases are in there: the lagging feed whole, the quiet ticker closed
    minutes = Counter(c.ticker for c in got if c.timeframe == "1m")
    assert minutes["KRAKEN:XRP/USD"] >= 149
    assert minutes["BINANCE:DOGE/USDT"] == 10
    trades = {c.ticker: c.trades for c in got if c.timeframe == "1d"}
    sent = Counter(t.ticker for t in flink_run.ticks)
    assert trades["BINANCE:ETH/USDT"] * 2 == sent["BINANCE:ETH/USDT"]  # duplicates once
    assert trades["BINANCE:BTC/USDT"] == sent["BINANCE:BTC/USDT"] - local.late  # late dropped
    assert local.late > 0


def test_fired_rules_match_the_local_runner(flink_run: FlinkRun, local: Folded) -> None:
    got = _by_rule(flink_run.fired)
    assert [f.rule.id for f in got] == sorted(fixture.FIRING)  # each once, no other
    assert {f.rule.kind for f in got} == {"price_cross", "percent_move", "volume_spike", "order"}
    assert {f.rule.condition.order_type for f in got if f.rule.kind == "order"} == {  # type: ignore[union-attr]
        "limit",
        "stop_loss",
        "take_profit",
    }
    assert got == _by_rule(local.fired)


def test_candles_and_alerts_reach_the_relay(flink_run: FlinkRun) -> None:
    relay = flink_run.relay
    relay.wait_for(len(flink_run.candles), len(flink_run.fired), timeout_s=30)
    closed = [c for _, c in relay.candles if c.closed]
    assert sorted(closed, key=_key) == sorted(flink_run.candles, key=_key)
    assert all(t == ohlc_topic(c.ticker, c.timeframe) for t, c in relay.candles)
    # open-candle updates of every timeframe went out too
    live = [c for _, c in relay.candles if not c.closed]
    assert {c.timeframe for c in live} == {tf.value for tf in ALL_TIMEFRAMES}
    assert _by_rule([f for _, f in relay.fired]) == _by_rule(flink_run.fired)
    # sealed on each person's tagged topic (a keyed hash: no name in it), the rule not in clear
    assert all(t == relay.sealer.topic_for(f.rule.user) for t, f in relay.fired)
    for (_, payload), (_, f) in zip(relay.sealed, relay.fired, strict=True):
        assert [s for s in (f.rule.user, f.rule.id, f.rule.ticker) if s.encode() in payload] == []
