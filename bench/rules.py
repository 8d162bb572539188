"""Rule evaluation: ticks/s through the pure RuleBook with 10k active rules over 20
tickers, against the same ticks with no rules at all (the baseline, same run).

:func:`market_rules` and :func:`market_ticks` build the fixture; the Flink benchmark
uses them too, so both engines are measured on the same rules and ticks.
"""

from __future__ import annotations

import random
import time

from bench.common import row
from dexorder.contracts.rules import (
    Condition,
    OrderTrigger,
    PercentMove,
    PriceCross,
    Rule,
    RuleRecord,
    VolumeSpike,
)
from dexorder.schemas import Tick
from streaming.rules import RuleBook

T0 = 1_700_000_000_000
#: the 20 tickers of the fixture, as ``EXCHANGE:BASE/QUOTE``
TICKERS = [f"BINANCE:T{i:02d}/USDT" for i in range(20)]
START_PRICE = 100.0


def market_rules(n: int = 10_000, tickers: list[str] = TICKERS, seed: int = 7) -> list[Rule]:
    """``n`` rules spread over ``tickers``, every kind: levels 2-40 % away from
    :data:`START_PRICE` (so few fire over a short random walk and the book stays
    ~``n`` strong), percent moves of 5-50 % over four window lengths, volume spikes."""
    rnd = random.Random(seed)
    rules = []
    for i in range(n):
        away = rnd.uniform(0.02, 0.4)
        high, low = START_PRICE * (1 + away), START_PRICE * (1 - away)
        k = rnd.random()
        cond: Condition
        if k < 0.4:
            up = rnd.random() < 0.5
            cond = PriceCross(direction="above" if up else "below", level=high if up else low)
        elif k < 0.7:
            side = rnd.choice(["buy", "sell"])
            order_type = rnd.choice(["limit", "stop_loss", "take_profit"])
            # the resting side of the market: a buy limit below, a buy stop above
            below = (side == "buy") != (order_type == "stop_loss")
            cond = OrderTrigger(
                order_id=f"o{i}",
                order_type=order_type,  # type: ignore[arg-type]
                side=side,  # type: ignore[arg-type]
                quantity=1.0,
                level=low if below else high,
            )
        elif k < 0.9:
            cond = PercentMove(
                percent=rnd.uniform(5, 50),
                window_ms=rnd.choice([60_000, 300_000, 900_000, 3_600_000]),
                direction=rnd.choice(["up", "down", "either"]),
            )
        else:
            cond = VolumeSpike(
                timeframe=rnd.choice(["1m", "5m", "1h"]),
                multiple=rnd.uniform(3, 10),
                lookback=rnd.choice([10, 20, 50]),
            )
        rules.append(
            Rule(
                id=f"rule-{i}",
                user=f"user-{i % 500}",
                ticker=tickers[i % len(tickers)],
                condition=cond,
                created_at=T0,
            )
        )
    return rules


def market_ticks(n: int, tickers: list[str] = TICKERS, seed: int = 1) -> list[Tick]:
    """``n`` ticks round-robin over ``tickers``, 5 ms apart, each ticker's price a random
    walk from :data:`START_PRICE` in steps of up to 0.05 %."""
    rnd = random.Random(seed)
    prices = dict.fromkeys(tickers, START_PRICE)
    out = []
    for i in range(n):
        ticker = tickers[i % len(tickers)]
        prices[ticker] *= 1 + rnd.uniform(-0.0005, 0.0005)
        exchange, _, symbol = ticker.partition(":")
        out.append(
            Tick(
                exchange=exchange,
                symbol=symbol,
                trade_id=str(i),
                price=prices[ticker],
                amount=rnd.random(),
                ts=T0 + i * 5,
            )
        )
    return out


def run_ticks(book: RuleBook, ticks: list[Tick]) -> tuple[float, int]:
    """Ticks per second through ``book.on_tick``, and how many rules fired."""
    fired = 0
    on_tick = book.on_tick
    t = time.perf_counter()
    for tick in ticks:
        fired += len(on_tick(tick))
    return len(ticks) / (time.perf_counter() - t), fired


def main(n_ticks: int = 500_000, n_rules: int = 10_000) -> dict[str, float]:
    print(f"rules: {n_rules:,} active rules over {len(TICKERS)} tickers, {n_ticks:,} ticks")
    ticks = market_ticks(n_ticks)
    baseline, _ = run_ticks(RuleBook(), ticks)
    book = RuleBook()
    for rule in market_rules(n_rules):
        book.put(RuleRecord(rule=rule))
    rate, fired = run_ticks(book, ticks)
    per_ticker = n_rules / len(TICKERS)
    row("RuleBook, no rules (baseline)", f"{baseline:,.0f}/s", "ticks")
    row(f"RuleBook, {n_rules:,} rules", f"{rate:,.0f}/s", f"ticks ({rate / baseline:.2f}x)")
    row(
        "rule evaluations (ticks/s x rules on the ticker)",
        f"{rate * per_ticker:,.0f}/s",
        f"{fired:,} fired, {len(book):,} left",
    )
    return {
        "baseline_ticks_s": baseline,
        "ticks_s": rate,
        "rule_evals_s": rate * per_ticker,
        "fired": float(fired),
    }
