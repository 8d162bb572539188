"""The one tick fixture both engines get (the parity test): every case in one input.

:func:`ticks` and :func:`rules`; the ticks fire each rule of :data:`FIRING` once.

In arrival order, two hours and a half of trading (crossing a 4h boundary) over six tickers:

* ``BINANCE:BTC/USDT``: a price path that goes to each rule's level once (see
  :func:`rules`), out-of-order ticks within the allowed lateness, and ticks beyond it
  (late: counted and dropped);
* ``BINANCE:ETH/USDT``: every trade delivered twice, as by two ingestors (the copy a few
  trades later at most), so only one of each counts;
* ``BINANCE:DOGE/USDT``: a quiet ticker, trading only in the first ten minutes (its
  candles close at the end of the input, not by other tickers' ticks);
* ``KRAKEN:XRP/USD``: a lagging feed whose trade times run 40 s behind the others: its
  own watermark keeps it whole (one watermark for every ticker would drop it as late);
* ``BINANCE:SOL/USDT``: plain random walk, with a burst of volume for the volume rule;
* ``BINANCE:HUGE/USDT``: two valid trades whose volumes sum to infinity: the local runner
  publishes none of its candles (it validates every candle before it goes out), nor may
  the job.

All times are whole days in the past, so the engines' future-tick check lets them in.
"""

from __future__ import annotations

import random
import time

import msgspec

from dexorder.contracts.rules import (
    Condition,
    OrderTrigger,
    PercentMove,
    PriceCross,
    Rule,
    RuleFired,
    RuleRecord,
    VolumeSpike,
)
from dexorder.schemas import Tick

LATENESS_MS = 2_000
#: midnight three days ago (UTC), plus three hours: the input crosses 04:00
T0 = (int(time.time() * 1000) // 86_400_000 - 3) * 86_400_000 + 3 * 3_600_000
SPAN_MS = 150 * 60_000
STEP_MS = 1_500

BTC = ("BINANCE", "BTC/USDT")
ETH = ("BINANCE", "ETH/USDT")
DOGE = ("BINANCE", "DOGE/USDT")
XRP = ("KRAKEN", "XRP/USD")
SOL = ("BINANCE", "SOL/USDT")
HUGE = ("BINANCE", "HUGE/USDT")


def _btc_price(t: int) -> float:
    """BTC's path: flat near 100, a rise to 112 (crossing 110 up) around minute 40, back,
    then a drop to 88 (crossing 90 down) around minute 100."""
    minute = (t - T0) / 60_000
    base = 100.0
    if 35 <= minute < 45:
        base = 100 + 12 * (1 - abs(minute - 40) / 5)
    elif 95 <= minute < 105:
        base = 100 - 12 * (1 - abs(minute - 100) / 5)
    return base


def ticks() -> list[Tick]:
    rnd = random.Random(11)
    out: list[Tick] = []
    ids = {k: 0 for k in (BTC, ETH, DOGE, XRP, SOL, HUGE)}
    eth_copies: list[tuple[int, Tick]] = []

    def tick(market: tuple[str, str], price: float, ts: int, amount: float | None = None) -> Tick:
        ids[market] += 1
        return Tick(
            exchange=market[0],
            symbol=market[1],
            trade_id=str(1_000 + ids[market]),
            price=round(price, 6),
            amount=round(amount if amount is not None else 0.1 + rnd.random(), 6),
            ts=ts,
            side="buy" if rnd.random() < 0.5 else "sell",
        )

    sol = 20.0
    for n, t in enumerate(range(T0, T0 + SPAN_MS, STEP_MS), start=1):
        jitter = rnd.randrange(0, 400)
        btc = tick(BTC, _btc_price(t) + rnd.uniform(-0.3, 0.3), t + jitter)
        out.append(btc)
        if n % 97 == 0:
            # out of order within the lateness: a trade from a second ago arrives now
            out.append(tick(BTC, _btc_price(t) + 0.1, t + jitter - 1_000))
        if n % 211 == 0:
            # beyond the lateness: 5 s old, dropped as late
            out.append(tick(BTC, 150.0, t + jitter - 5_000))
        eth = tick(ETH, 50 + rnd.uniform(-1, 1), t + 100)
        out.append(eth)
        # the second ingestor's copy: now or one trade later (within the lateness)
        eth_copies.append((n + rnd.randrange(0, 2), eth))
        while eth_copies and eth_copies[0][0] <= n:
            out.append(eth_copies.pop(0)[1])
        if t < T0 + 10 * 60_000 and n % 3 == 0:
            out.append(tick(DOGE, 0.1 + rnd.uniform(0, 0.01), t + 200))
        if t - 40_000 >= T0:
            out.append(tick(XRP, 0.5 + rnd.uniform(-0.01, 0.01), t - 40_000))
        if n in (50, 51):
            # two valid trades whose volumes sum to inf: their candles must not go out
            out.append(tick(HUGE, 1.0, t + 500, 1e308))
        sol *= 1 + rnd.uniform(-0.001, 0.001)
        burst = 200.0 if T0 + 120 * 60_000 <= t < T0 + 121 * 60_000 else None
        out.append(tick(SOL, sol, t + 300, burst))
    return out


def _rule(rule_id: str, user: str, market: tuple[str, str], cond: Condition, at: int) -> Rule:
    return Rule(
        id=rule_id, user=user, ticker=f"{market[0]}:{market[1]}", condition=cond, created_at=at
    )


def rules() -> list[RuleRecord]:
    """Every rule kind, each fired once by the ticks; one created too late to fire and one
    that already fired before the input (neither may fire)."""
    late = T0 + 60 * 60_000  # after BTC's rise: the rise cannot fire it
    active = [
        _rule("cross-up", "alice", BTC, PriceCross(direction="above", level=110), T0),
        _rule("cross-down", "alice", BTC, PriceCross(direction="below", level=90), T0),
        _rule("move-up", "bob", BTC, PercentMove(percent=5, window_ms=300_000, direction="up"), T0),
        _rule("spike", "bob", SOL, VolumeSpike(timeframe="1m", multiple=5, lookback=20), T0),
        _rule("limit-buy", "carol", BTC, _order("o-1", "limit", "buy", 95), T0),
        _rule("stop-sell", "carol", BTC, _order("o-2", "stop_loss", "sell", 92), T0),
        _rule("profit-sell", "carol", BTC, _order("o-3", "take_profit", "sell", 108), T0),
        _rule("too-late", "alice", BTC, PriceCross(direction="above", level=105), late),
    ]
    done = _rule("already", "bob", BTC, PriceCross(direction="above", level=101), T0)
    fired = RuleFired(rule=done, fired_at=T0 - 1, price=101.0)
    return [RuleRecord(rule=r) for r in active] + [RuleRecord(rule=done, fired=fired)]


#: the rules of :func:`rules` that the ticks fire
FIRING = {"cross-up", "cross-down", "move-up", "spike", "limit-buy", "stop-sell", "profit-sell"}


def _order(order_id: str, order_type: str, side: str, level: float) -> OrderTrigger:
    return msgspec.convert(
        {
            "order_id": order_id,
            "order_type": order_type,
            "side": side,
            "quantity": 1.0,
            "level": level,
        },
        OrderTrigger,
    )
