"""The backtest engine against results worked out by hand, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.backtest.engine import F64, Costs, Exits, run
from agent.backtest.metrics import report

OPEN = np.array([100.0, 100.0, 110.0, 120.0, 90.0])
HIGH = np.array([101.0, 111.0, 121.0, 121.0, 91.0])
LOW = np.array([99.0, 99.0, 109.0, 85.0, 89.0])
CLOSE = np.array([100.0, 110.0, 120.0, 90.0, 90.0])
HOUR = 3_600_000


def test_a_long_round_trip_without_costs() -> None:
    # long after bar 0 closes, flat after bar 2 closes: bought at bar 1's open, sold at bar 3's
    r = run(OPEN, HIGH, LOW, CLOSE, np.array([1.0, 1, 0, 0, 0]), Costs(0, 0, 1000))
    assert r.equity.tolist() == [1000, 1100, 1200, 1200, 1200]
    assert r.units.tolist() == [0, 10, 10, 0, 0]
    (t,) = r.trades
    assert (t.entry_index, t.exit_index, t.entry_price, t.exit_price, t.pnl) == (
        1,
        3,
        100,
        120,
        200,
    )
    figures = report(r, 1000, HOUR, 5 * HOUR)
    assert figures.total_return == pytest.approx(0.2)
    assert (figures.win_rate, figures.exposure, figures.max_drawdown, figures.trades) == (
        1,
        0.4,
        0,
        1,
    )


def test_fees_and_slippage_by_hand() -> None:
    r = run(OPEN, HIGH, LOW, CLOSE, np.array([1.0, 1, 0, 0, 0]), Costs(0.001, 0.01, 1000))
    buy = 100 * 1.01
    units = 1000 / buy
    cash = 1000 - units * buy - units * buy * 0.001
    sell = 120 * 0.99
    cash += units * sell - units * sell * 0.001
    assert r.equity[-1] == pytest.approx(cash, rel=1e-12)
    assert r.equity[1] == pytest.approx(1000 - units * buy * 0.001 - units * buy + units * 110)
    assert r.fees == pytest.approx(units * buy * 0.001 + units * sell * 0.001)
    assert r.trades[0].pnl == pytest.approx(cash - 1000)


def test_a_short_gains_when_the_price_falls() -> None:
    # short after bar 2 (sold at bar 3's open, 120), still short at the end (90)
    r = run(OPEN, HIGH, LOW, CLOSE, np.array([0.0, 0, -1, -1, -1]), Costs(0, 0, 1200))
    assert r.equity.tolist() == [1200, 1200, 1200, 1500, 1500]
    assert r.trades[0].side == "short" and r.trades[0].reason == "open at end"
    assert r.trades[0].pnl == pytest.approx(300)


def test_a_stop_loss_exits_within_the_bar_and_stays_out() -> None:
    target = np.array([1.0, 1, 1, 1, 1])
    r = run(OPEN, HIGH, LOW, CLOSE, target, Costs(0, 0, 1000), Exits(stop_loss=0.05))
    assert r.mode == "bar-by-bar"
    (t,) = r.trades
    # bought at 100 (bar 1); bar 3's low (85) crosses the stop at 95
    assert (t.exit_index, t.reason) == (3, "stop-loss")
    assert t.exit_price == pytest.approx(95)
    # no re-entry: the target did not change
    assert r.equity.tolist() == pytest.approx([1000, 1100, 1200, 950, 950])


def test_take_profit() -> None:
    r = run(
        OPEN,
        HIGH,
        LOW,
        CLOSE,
        np.array([1.0, 1, 1, 1, 1]),
        Costs(0, 0, 1000),
        Exits(take_profit=0.15),
    )
    t = r.trades[0]
    assert (t.exit_index, t.reason) == (2, "take-profit")
    assert t.exit_price == pytest.approx(115)


#: open, high, low, close, target: ``run``'s first five arguments
Market = tuple[F64, F64, F64, F64, F64]


@st.composite
def markets(draw: st.DrawFn) -> Market:
    n = draw(st.integers(2, 60))
    closes = np.array(draw(st.lists(st.floats(1, 1000), min_size=n, max_size=n)))
    opens = np.array(draw(st.lists(st.floats(1, 1000), min_size=n, max_size=n)))
    highs = np.maximum(opens, closes) * 1.01
    lows = np.minimum(opens, closes) * 0.99
    target = np.array(
        draw(st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), min_size=n, max_size=n))
    )
    return opens, highs, lows, closes, target


@settings(max_examples=150, deadline=None)
@given(markets())
def test_bar_by_bar_agrees_with_vectorised_when_no_exit_fires(m: Market) -> None:
    costs = Costs(0.001, 0.0005, 10_000)
    fast = run(*m, costs)
    slow = run(*m, costs, Exits(stop_loss=1e9, take_profit=1e9))  # never reached
    assert slow.mode == "bar-by-bar" and fast.mode == "vectorised"
    np.testing.assert_allclose(fast.equity, slow.equity, rtol=1e-9)
    assert [t.pnl for t in fast.trades] == pytest.approx([t.pnl for t in slow.trades])


@settings(max_examples=50, deadline=None)
@given(markets())
def test_the_same_inputs_give_bit_identical_results(m: Market) -> None:
    a, b = run(*m, Costs()), run(*m, Costs())
    assert a.equity.tobytes() == b.equity.tobytes()
    assert [t.__dict__ for t in a.trades] == [t.__dict__ for t in b.trades]


def test_flat_is_flat() -> None:
    r = run(OPEN, HIGH, LOW, CLOSE, np.zeros(5), Costs(0.001, 0.001, 500))
    assert r.equity.tolist() == [500] * 5 and r.trades == [] and r.fees == 0
