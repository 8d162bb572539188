"""Property tests of candle folding and dedup (streaming/candles.py)."""

from __future__ import annotations

import math
import random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from dexorder.markets import ALL_TIMEFRAMES, Timeframe
from dexorder.schemas import Candle, Tick
from streaming.candles import CandleBook

LATENESS = 2_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a UTC midnight


@st.composite
def trade_streams(draw: st.DrawFn) -> list[Tick]:
    """Ticks of one or two tickers over up to two days, in trade-time order."""
    n = draw(st.integers(1, 150))
    gaps = draw(st.lists(st.integers(0, 3_000_000), min_size=n, max_size=n))
    prices = draw(st.lists(st.floats(1.0, 100_000.0), min_size=n, max_size=n))
    amounts = draw(st.lists(st.floats(0.0001, 50.0), min_size=n, max_size=n))
    symbols = draw(st.lists(st.sampled_from(["BTC/USDT", "ETH/USDT"]), min_size=n, max_size=n))
    ts = T0
    ticks = []
    for i in range(n):
        ts += gaps[i]
        ticks.append(
            Tick(
                exchange="BINANCE",
                symbol=symbols[i],
                trade_id=str(i),
                price=prices[i],
                amount=amounts[i],
                ts=ts,
            )
        )
    return ticks


def fold(ticks: list[Tick]) -> list[Candle]:
    book = CandleBook(LATENESS)
    for t in ticks:
        book.add(t)
    for key in list(book.tickers):
        book.advance(key, 2**61)  # close everything
    return book.drain()


def by_key(candles: list[Candle]) -> dict[tuple[str, str, int], Candle]:
    out = {(c.symbol, c.timeframe, c.open_time): c for c in candles}
    assert len(out) == len(candles), "a candle was emitted twice"
    return out


def assert_same_candles(a: list[Candle], b: list[Candle]) -> None:
    """Equal candles; volumes only up to float rounding, which depends on summation order."""
    ka, kb = by_key(a), by_key(b)
    assert ka.keys() == kb.keys()
    for key, ca in ka.items():
        cb = kb[key]
        assert math.isclose(ca.volume, cb.volume, rel_tol=1e-12), key
        assert msgspec.structs.replace(ca, volume=0.0) == msgspec.structs.replace(cb, volume=0.0), (
            key
        )


@given(trade_streams())
def test_high_low_bound_open_close(ticks: list[Tick]) -> None:
    for c in fold(ticks):
        assert c.closed
        assert c.high >= max(c.open, c.close)
        assert c.low <= min(c.open, c.close)
        assert c.trades >= 1


@given(trade_streams())
def test_volume_and_trades_conserved_across_timeframes(ticks: list[Tick]) -> None:
    candles = fold(ticks)
    for symbol in {t.symbol for t in ticks}:
        mine = [t for t in ticks if t.symbol == symbol]
        for tf in ALL_TIMEFRAMES:
            cs = [c for c in candles if c.symbol == symbol and c.timeframe == tf.value]
            assert sum(c.trades for c in cs) == len(mine)
            assert math.isclose(
                sum(c.volume for c in cs), sum(t.amount for t in mine), rel_tol=1e-9
            )
            for c in cs:
                inside = [t for t in mine if tf.floor(t.ts) == c.open_time]
                assert c.trades == len(inside)
                assert c.high == max(t.price for t in inside)
                assert c.low == min(t.price for t in inside)
                assert c.open == inside[0].price
                assert c.close == inside[-1].price


@given(trade_streams(), st.randoms(use_true_random=False))
def test_dedup_is_idempotent(ticks: list[Tick], rnd: random.Random) -> None:
    # Every trade delivered once or several times, copies close together as
    # two ingestors would deliver them.
    doubled: list[Tick] = []
    for t in ticks:
        doubled.extend([t] * rnd.randint(1, 3))
    assert fold(doubled) == fold(ticks)


@given(trade_streams(), st.randoms(use_true_random=False))
def test_order_independent_within_allowed_lateness(ticks: list[Tick], rnd: random.Random) -> None:
    # Arrival order sorted by trade time plus a jitter under the allowed
    # lateness: no tick is ever late, so the candles must not change.
    jittered = sorted(ticks, key=lambda t: t.ts + rnd.randrange(LATENESS))
    assert_same_candles(fold(jittered), fold(ticks))


def test_late_tick_is_counted_and_dropped() -> None:
    book = CandleBook(LATENESS)

    def mk(i: int, ts: int, p: float) -> Tick:
        return Tick(exchange="X", symbol="A/B", trade_id=str(i), price=p, amount=1.0, ts=ts)

    assert book.add(mk(1, T0 + 10_000, 10.0))
    assert book.add(mk(2, T0 + 70_000, 11.0))  # watermark now T0+68s: first minute closes
    assert not book.add(mk(3, T0 + 20_000, 99.0))  # late for the closed minute
    assert book.late == 1
    closed = book.drain()
    assert [(c.timeframe, c.high, c.trades) for c in closed] == [("1m", 10.0, 1)]


def test_duplicate_counted() -> None:
    book = CandleBook(LATENESS)
    t = Tick(exchange="X", symbol="A/B", trade_id="7", price=1.0, amount=1.0, ts=T0)
    assert book.add(t) and not book.add(t)
    assert book.duplicates == 1


def test_idle_ticker_closes_by_wall_clock() -> None:
    book = CandleBook(LATENESS)
    t = Tick(exchange="X", symbol="A/B", trade_id="1", price=5.0, amount=1.0, ts=T0 + 30_000)
    book.add_many([t], now_ms=1_000)
    book.advance_idle(now_ms=1_000 + 20_000)  # event time estimate T0+50s: still open
    assert book.drain() == []
    book.advance_idle(now_ms=1_000 + 33_000)  # estimate T0+63s - lateness = T0+61s
    assert [c.timeframe for c in book.drain()] == ["1m"]


def test_idle_ticker_closes_higher_timeframes_too() -> None:
    book = CandleBook(LATENESS)
    t = Tick(exchange="X", symbol="A/B", trade_id="1", price=5.0, amount=1.0, ts=T0 + 30_000)
    book.add_many([t], now_ms=1_000)
    book.advance_idle(now_ms=41_000)  # closes the minute; 5m..1d stay open
    assert [c.timeframe for c in book.drain()] == ["1m"]
    book.advance_idle(now_ms=86_401_000)  # a day later every timeframe has closed
    assert [c.timeframe for c in book.drain()] == ["5m", "15m", "1h", "4h", "1d"]


def test_open_candles_show_every_timeframe() -> None:
    book = CandleBook(LATENESS)
    for i, (ts, p) in enumerate([(T0 + 1_000, 10.0), (T0 + 61_000, 12.0), (T0 + 125_000, 8.0)]):
        book.add(Tick(exchange="X", symbol="A/B", trade_id=str(i), price=p, amount=2.0, ts=ts))
    live = {c.timeframe: c for c in book.open_candles("X:A/B")}
    assert set(live) == {tf.value for tf in ALL_TIMEFRAMES}
    assert live["1m"].open_time == T0 + 120_000 and live["1m"].trades == 1
    h = live["1h"]
    assert (h.open, h.high, h.low, h.close, h.volume, h.trades) == (10.0, 12.0, 8.0, 8.0, 6.0, 3)
    assert not h.closed


@settings(max_examples=30)
@given(trade_streams(), st.integers(0, 149))
def test_restore_from_snapshot_emits_each_candle_once(ticks: list[Tick], cut: int) -> None:
    """A restart replaying from a snapshot, emitted candles marked, emits none twice."""
    cut = min(cut, len(ticks))
    book = CandleBook(LATENESS)
    for t in ticks[:cut]:
        book.add(t)
    snap = book.snapshot()
    before = book.drain()
    # the crashed process went on a little past the snapshot and emitted more
    for t in ticks[cut : cut + 5]:
        book.add(t)
    emitted_after = book.drain()

    restarted = CandleBook(LATENESS)
    restarted.restore(snap)
    for c in emitted_after:
        restarted.mark_emitted(c.ticker, c.timeframe, c.open_time)
    for t in ticks[cut:]:
        restarted.add(t)
    for key in list(restarted.tickers):
        restarted.advance(key, 2**61)
    combined = before + emitted_after + restarted.drain()
    assert_same_candles(combined, fold(ticks))


def test_timeframe_floor() -> None:
    assert Timeframe.H4.floor(T0 + 5 * 3_600_000) == T0 + 4 * 3_600_000
