"""A seeded market simulator: deterministic prices, klines and trades, no I/O.

Prices are a mean-reverting random walk of daily log-returns, with calm and
volatile regimes from day to day and short volatility bursts within a day;
each day's minutes are a Brownian bridge that lands on the day's close. Every
number is a pure function of (seed, symbol, time), so any range of history can
be generated on demand and two emulators with the same seed agree exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

MINUTE_MS = 60_000
DAY_MS = 86_400_000
#: History starts here (2020-01-01 UTC) and runs to 2031.
HISTORY_START_MS = 1_577_836_800_000
_HISTORY_DAYS = 365 * 12
_MAX_TRADES_PER_SECOND = 99


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One simulated market."""

    base: str
    quote: str
    start_price: float
    daily_vol: float
    mean_trade_size: float
    tick_size: float
    step_size: float

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"

    @property
    def market_id(self) -> str:
        return f"{self.base}{self.quote}"


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTC", "USDT", 42_000.0, 0.030, 0.02, 0.01, 0.00001),
    SymbolSpec("ETH", "USDT", 2_300.0, 0.038, 0.4, 0.01, 0.0001),
    SymbolSpec("SOL", "USDT", 95.0, 0.055, 8.0, 0.01, 0.001),
    SymbolSpec("BNB", "USDT", 310.0, 0.032, 2.0, 0.01, 0.001),
    SymbolSpec("XRP", "USDT", 0.60, 0.045, 900.0, 0.0001, 0.1),
)


@dataclass(frozen=True, slots=True)
class Trade:
    """One simulated trade; ``id`` increases with time."""

    id: int
    time: int
    price: float
    qty: float
    buyer_is_maker: bool


@dataclass
class MarketSimulator:
    """Deterministic history and live trades for several symbols."""

    seed: int = 42
    specs: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS
    trade_rate: float = 4.0
    _by_id: dict[str, SymbolSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {s.market_id: s for s in self.specs}

    def spec(self, market_id: str) -> SymbolSpec | None:
        return self._by_id.get(market_id)

    # -- daily path ----------------------------------------------------------

    def _daily(self, spec: SymbolSpec) -> tuple[np.ndarray, np.ndarray]:
        return _daily_path(self.seed, spec)

    def _day_minutes(self, spec: SymbolSpec, day: int) -> np.ndarray:
        """Minute OHLCV+trades for one day: array of shape (1440, 6)."""
        return _day_minutes(self.seed, spec, day)

    # -- klines --------------------------------------------------------------

    def minute_klines(self, spec: SymbolSpec, start_ms: int, end_ms: int) -> np.ndarray:
        """1m rows ``[open_time, open, high, low, close, volume, trades]`` opening in range."""
        start_ms = max(start_ms - start_ms % MINUTE_MS, HISTORY_START_MS)
        end_ms = min(end_ms, HISTORY_START_MS + _HISTORY_DAYS * DAY_MS)
        if end_ms <= start_ms:
            return np.empty((0, 7))
        first_day = (start_ms - HISTORY_START_MS) // DAY_MS
        last_day = (end_ms - 1 - HISTORY_START_MS) // DAY_MS
        parts = []
        for day in range(first_day, last_day + 1):
            rows = self._day_minutes(spec, day)
            times = HISTORY_START_MS + day * DAY_MS + np.arange(1440, dtype=np.int64) * MINUTE_MS
            mask = (times >= start_ms) & (times < end_ms)
            parts.append(np.column_stack([times[mask], rows[mask]]))
        return np.concatenate(parts)

    def klines(self, spec: SymbolSpec, interval_ms: int, start_ms: int, end_ms: int) -> np.ndarray:
        """Rows ``[open_time, open, high, low, close, volume, trades]`` at any multiple of 1m."""
        start_ms -= start_ms % interval_ms
        rows = self.minute_klines(spec, start_ms, end_ms)
        if interval_ms == MINUTE_MS or len(rows) == 0:
            return rows
        groups = (rows[:, 0] - rows[:, 0] % interval_ms).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        out = np.empty((len(starts), 7))
        out[:, 0] = groups[starts]
        out[:, 1] = rows[starts, 1]
        out[:, 2] = np.maximum.reduceat(rows[:, 2], starts)
        out[:, 3] = np.minimum.reduceat(rows[:, 3], starts)
        out[:, 4] = rows[ends - 1, 4]
        out[:, 5] = np.add.reduceat(rows[:, 5], starts)
        out[:, 6] = np.add.reduceat(rows[:, 6], starts)
        return out

    def price_at(self, spec: SymbolSpec, ts_ms: int) -> float:
        row = self.minute_klines(spec, ts_ms, ts_ms + 1)
        return float(row[0, 4]) if len(row) else spec.start_price

    # -- live trades ---------------------------------------------------------

    def trades_in_second(self, spec: SymbolSpec, second: int) -> list[Trade]:
        """The simulated trades of one wall-clock second (epoch seconds)."""
        if self.trade_rate <= 0:
            return []
        minute_ms = second * 1000 - (second * 1000) % MINUTE_MS
        kl = self.minute_klines(spec, minute_ms, minute_ms + MINUTE_MS)
        if len(kl) == 0:
            return []
        _, o, h, low, c, _, _ = kl[0]
        rng = np.random.default_rng([self.seed, _sym_key(spec), 7, second])
        burst = max(1.0, (h - low) / max(o, 1e-12) / (spec.daily_vol / 38.0))
        n = min(int(rng.poisson(self.trade_rate * min(burst, 5.0))), _MAX_TRADES_PER_SECOND)
        if n == 0:
            return []
        offsets = np.sort(rng.integers(0, 1000, size=n))
        frac = ((second * 1000 - minute_ms) + offsets) / MINUTE_MS
        prices = o + (c - o) * frac + rng.normal(0, (h - low) / 6 + 1e-12, size=n)
        prices = np.clip(prices, low, h)
        prices = np.round(prices / spec.tick_size) * spec.tick_size
        qtys = np.maximum(rng.lognormal(np.log(spec.mean_trade_size), 1.0, size=n), spec.step_size)
        qtys = np.round(qtys / spec.step_size) * spec.step_size
        makers = rng.random(n) < 0.5
        return [
            Trade(
                second * 1000 + i,
                second * 1000 + int(offsets[i]),
                float(prices[i]),
                float(qtys[i]),
                bool(makers[i]),
            )
            for i in range(n)
        ]

    def trades_between(self, spec: SymbolSpec, start_ms: int, end_ms: int) -> list[Trade]:
        """Simulated trades with ``start_ms <= time < end_ms``, in id order."""
        out: list[Trade] = []
        for second in range(start_ms // 1000, (end_ms - 1) // 1000 + 1):
            out.extend(
                t for t in self.trades_in_second(spec, second) if start_ms <= t.time < end_ms
            )
        return out


def _sym_key(spec: SymbolSpec) -> int:
    return zlib.crc32(spec.market_id.encode())


@lru_cache(maxsize=64)
def _daily_path(seed: int, spec: SymbolSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per day: log price at the day's open, and that day's volatility."""
    rng = np.random.default_rng([seed, _sym_key(spec), 1])
    volatile = np.empty(_HISTORY_DAYS, dtype=bool)
    state = False
    flips = rng.random(_HISTORY_DAYS)
    for d in range(_HISTORY_DAYS):  # regimes persist for days
        if flips[d] < (0.15 if state else 0.05):
            state = not state
        volatile[d] = state
    vol = spec.daily_vol * np.where(volatile, 2.2, 0.8)
    eps = rng.normal(0, 1, _HISTORY_DAYS) * vol
    x0 = np.log(spec.start_price)
    opens = np.empty(_HISTORY_DAYS + 1)
    opens[0] = x0
    for d in range(_HISTORY_DAYS):  # gentle pull back towards the start price
        opens[d + 1] = opens[d] + eps[d] - 0.004 * (opens[d] - x0)
    return opens, vol


@lru_cache(maxsize=2048)
def _day_minutes(seed: int, spec: SymbolSpec, day: int) -> np.ndarray:
    opens, vol = _daily_path(seed, spec)
    rng = np.random.default_rng([seed, _sym_key(spec), 2, day])
    sigma = np.full(1440, vol[day] / np.sqrt(1440))
    for _ in range(int(rng.integers(0, 4))):  # volatility bursts
        at, length = int(rng.integers(0, 1440)), int(rng.integers(10, 120))
        sigma[at : at + length] *= rng.uniform(2.5, 5.0)
    steps = rng.normal(0, 1, 1440) * sigma
    path = np.cumsum(steps)
    # Brownian bridge: land exactly on the next day's open.
    path += (opens[day + 1] - opens[day] - path[-1]) * np.arange(1, 1441) / 1440
    closes = np.exp(opens[day] + path)
    open_ = np.r_[np.exp(opens[day]), closes[:-1]]
    wick = np.abs(rng.normal(0, 1, (2, 1440))) * sigma * 0.6
    high = np.maximum(open_, closes) * (1 + wick[0])
    low = np.minimum(open_, closes) * (1 - wick[1])
    trades = rng.poisson(60 * (sigma / sigma.min()) ** 0.7)
    volume = trades * spec.mean_trade_size * rng.lognormal(0, 0.3, 1440)
    tick = spec.tick_size
    out = np.column_stack([open_, high, low, closes, volume, trades]).astype(float)
    out[:, :4] = np.round(out[:, :4] / tick) * tick
    out[:, 1] = np.maximum(out[:, 1], out[:, [0, 3]].max(axis=1))
    out[:, 2] = np.minimum(out[:, 2], out[:, [0, 3]].min(axis=1))
    return out
