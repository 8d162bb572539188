"""What market data every consumer accepts: the one place the rules live. Pure, no I/O.

Kafka and the relay are reachable by more than the platform's own parts (and an
exchange is outside input too), so whoever reads a tick or a candle checks it
before it can change any state. A record that fails is counted (by reason) and
dropped, never folded in:

* prices and amounts must be finite and positive (NaN, ±inf, 0 and negatives
  poison every sum and min/max they touch);
* a timestamp may be at most ``max_skew_ms`` beyond the reader's wall clock.
  One year-2100 tick would otherwise move its ticker's watermark to 2100, and
  every real tick after it would be dropped as late, for ever, checkpoint
  included. The allowance covers clock differences between the exchange and
  this machine (NTP keeps them to milliseconds); :data:`DEFAULT_MAX_SKEW_MS` is
  5 s, configurable as ``market_data.max_clock_skew_ms``. The harm a tick just
  inside the allowance can do is bounded by it: real ticks are dropped as late
  for at most that long.
* candles (live ones from the stream job, backfill rows from an exchange) must
  be finite, positive and consistent (``low <= open, close <= high``), with a
  finite, non-negative volume and trade count, and must not start in the future.

Each check returns ``None`` for good data or a short reason, which is also the
``reason`` label of the consumers' Prometheus counters.
"""

from __future__ import annotations

import math

from dexorder.schemas import Candle, OhlcRow, Tick

#: How far beyond the wall clock a timestamp may be (ms) unless configured otherwise.
DEFAULT_MAX_SKEW_MS = 5_000

_INF = math.inf


def _number_problem(name: str, value: float, *, zero_ok: bool = False) -> str | None:
    # ``0 < x < inf`` is False for NaN, ±inf, 0 and negatives: one comparison on the hot path.
    if 0.0 < value < _INF or (zero_ok and value == 0.0):
        return None
    if not math.isfinite(value):
        return f"{name}_not_finite"
    return f"{name}_negative" if zero_ok else f"{name}_not_positive"


def tick_problem(tick: Tick, now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> str | None:
    """Why ``tick`` must be dropped when read at wall-clock ``now_ms``; None if it is good."""
    if 0.0 < tick.price < _INF and 0.0 < tick.amount < _INF and 0 < tick.ts <= now_ms + max_skew_ms:
        return None  # the common case, kept to three comparisons
    return (
        _number_problem("price", tick.price)
        or _number_problem("amount", tick.amount)
        or (None if tick.ts > 0 else "ts_not_positive")
        or (None if tick.ts <= now_ms + max_skew_ms else "ts_in_future")
    )


def ohlc_problem(
    open_time: int,
    o: float,
    h: float,
    low: float,
    c: float,
    volume: float,
    trades: int,
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> str | None:
    """Why one OHLCV candle must be dropped when read at ``now_ms``; None if it is good."""
    for name, value in (("open", o), ("high", h), ("low", low), ("close", c)):
        problem = _number_problem(name, value)
        if problem:
            return problem
    problem = _number_problem("volume", volume, zero_ok=True)
    if problem:
        return problem
    if trades < 0:
        return "trades_negative"
    if not (low <= o <= h and low <= c <= h):
        return "ohlc_inconsistent"
    if open_time < 0:
        return "open_time_negative"
    if open_time > now_ms + max_skew_ms:
        return "open_time_in_future"
    return None


def candle_problem(
    candle: Candle, now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS
) -> str | None:
    """Why ``candle`` must be dropped when read at ``now_ms``; None if it is good."""
    return ohlc_problem(
        candle.open_time,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.trades,
        now_ms,
        max_skew_ms,
    )


def ohlc_row_problem(
    row: OhlcRow, now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS
) -> str | None:
    """Why one backfill row ``(time, open, high, low, close, volume, trades)`` must be dropped."""
    t, o, h, low, c, v, n = row
    return ohlc_problem(t, o, h, low, c, v, n, now_ms, max_skew_ms)
