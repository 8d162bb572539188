"""The market simulator: deterministic, consistent candles, history years back."""

from __future__ import annotations

import time

import numpy as np

from services.exchange_emulator.simulator import (
    DEFAULT_SYMBOLS,
    HISTORY_START_MS,
    MINUTE_MS,
    MarketSimulator,
)

BTC = DEFAULT_SYMBOLS[0]
DAY = 86_400_000


def test_same_seed_same_market_other_seed_other_market() -> None:
    a, b, c = MarketSimulator(seed=1), MarketSimulator(seed=1), MarketSimulator(seed=2)
    start = HISTORY_START_MS + 400 * DAY
    assert np.array_equal(
        a.minute_klines(BTC, start, start + DAY), b.minute_klines(BTC, start, start + DAY)
    )
    assert not np.array_equal(
        a.minute_klines(BTC, start, start + DAY), c.minute_klines(BTC, start, start + DAY)
    )
    assert a.trades_in_second(BTC, 1_800_000_000) == b.trades_in_second(BTC, 1_800_000_000)


def test_candles_are_consistent() -> None:
    sim = MarketSimulator()
    rows = sim.minute_klines(BTC, HISTORY_START_MS, HISTORY_START_MS + 3 * DAY)
    assert len(rows) == 3 * 1440
    t, o, h, low, c, v, _trades = rows.T
    assert np.all(np.diff(t) == MINUTE_MS)
    assert np.all(h >= np.maximum(o, c)) and np.all(low <= np.minimum(o, c))
    assert np.all(v > 0) and np.all(low > 0)
    assert np.allclose(o[1:], c[:-1])  # each minute opens where the last closed


def test_history_goes_back_two_years_and_aggregates() -> None:
    sim = MarketSimulator()
    start = int(time.time() * 1000) - 2 * 365 * DAY - DAY
    start -= start % DAY
    hourly = sim.klines(BTC, 3_600_000, start, start + DAY)
    minutes = sim.minute_klines(BTC, start, start + DAY)
    assert len(hourly) == 24
    assert hourly[0, 1] == minutes[0, 1] and hourly[-1, 4] == minutes[-1, 4]
    assert np.isclose(hourly[:, 5].sum(), minutes[:, 5].sum())
    assert hourly[:, 2].max() == minutes[:, 2].max()


def test_volatility_varies() -> None:
    sim = MarketSimulator()
    closes = sim.klines(BTC, DAY, HISTORY_START_MS, HISTORY_START_MS + 365 * DAY)[:, 4]
    r = np.diff(np.log(closes))
    rolling = np.array([r[i : i + 20].std() for i in range(0, len(r) - 20, 20)])
    assert rolling.max() > 1.8 * rolling.min()  # calm and volatile regimes


def test_trade_ids_increase_and_prices_stay_in_the_candle() -> None:
    sim = MarketSimulator(trade_rate=20)
    second = 1_800_000_000
    trades = sim.trades_between(BTC, second * 1000, (second + 5) * 1000)
    assert trades and [t.id for t in trades] == sorted({t.id for t in trades})
    kl = sim.minute_klines(BTC, second * 1000, (second + 5) * 1000)
    assert all(kl[:, 3].min() <= t.price <= kl[:, 2].max() for t in trades)
