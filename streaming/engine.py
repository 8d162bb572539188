"""Ticks through the candle book and the rule book together: pure, no I/O.

The local runner folds every tick with :func:`step` (and closes quiet tickers with
:func:`close_idle`); :func:`fold` runs a whole list of ticks the same way and then closes
everything, so another engine (the Flink job) can be compared with it on one fixture.

Order: a tick goes into the candle book first; only an accepted tick (not a duplicate,
not late) reaches the rules, then every candle the tick closed does, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from dexorder.contracts.rules import Rule, RuleFired, RuleRecord
from dexorder.schemas import Candle, Tick
from streaming.candles import CandleBook
from streaming.rules import RuleBook

#: A watermark beyond any trade time: advancing to it closes every open candle.
END_OF_INPUT = 2**61


def step(book: CandleBook, rules: RuleBook, tick: Tick) -> list[RuleFired]:
    """Fold one tick; return the rules it (and the candles it closed) fired.

    The closed candles stay in ``book.closed`` for the caller to drain."""
    before = len(book.closed)
    if not book.add(tick):
        return []
    return rules.on_tick(tick) + _fire_closed_since(book, rules, before)


def step_many(
    book: CandleBook, rules: RuleBook, ticks: Iterable[Tick], now_ms: int, fired: list[RuleFired]
) -> set[str]:
    """:meth:`CandleBook.add_many` with the rules: fold ticks that arrived at wall-clock
    ``now_ms`` as :func:`step` does, append what fired to ``fired``, return the tickers
    the ticks moved."""
    touched: set[str] = set()
    add, on_tick, closed = book.add, rules.on_tick, book.closed
    for tick in ticks:
        before = len(closed)
        if add(tick):
            key = f"{tick.exchange}:{tick.symbol}"
            touched.add(key)
            now = on_tick(tick, key)
            if now:
                fired += now
            if len(closed) > before:
                fired += _fire_closed_since(book, rules, before)
    for key in touched:
        book.tickers[key].seen_at = now_ms
    return touched


def _fire_closed_since(book: CandleBook, rules: RuleBook, before: int) -> list[RuleFired]:
    fired: list[RuleFired] = []
    closed = book.closed
    for i in range(before, len(closed)):
        fired += rules.on_candle(closed[i])
    return fired


def close_idle(book: CandleBook, rules: RuleBook, now_ms: int) -> list[RuleFired]:
    """:meth:`CandleBook.advance_idle`, and the rules the candles it closed fired."""
    before = len(book.closed)
    book.advance_idle(now_ms)
    return _fire_closed_since(book, rules, before)


def close_all(book: CandleBook, rules: RuleBook) -> list[RuleFired]:
    """End of input: every ticker's watermark to :data:`END_OF_INPUT` (tickers in name
    order), so every open candle closes; return the rules those candles fired."""
    before = len(book.closed)
    for ticker in sorted(book.tickers):
        book.advance(ticker, END_OF_INPUT)
    return _fire_closed_since(book, rules, before)


class Folded(msgspec.Struct, kw_only=True):
    """What :func:`fold` made of its ticks."""

    #: closed candles, every timeframe, in the order they closed
    candles: list[Candle]
    #: fired rules, in the order they fired (per call, by rule id)
    fired: list[RuleFired]
    late: int
    duplicates: int


def fold(
    ticks: Iterable[Tick],
    rules: Iterable[Rule | RuleRecord],
    allowed_lateness_ms: int,
    *,
    close_at_end: bool = True,
) -> Folded:
    """Run ``ticks`` (valid ones, in arrival order) through a fresh candle book and a rule
    book holding ``rules``, as the local runner does; with ``close_at_end``, then
    :func:`close_all`. Quiet tickers close only there: no wall clock is involved."""
    book = CandleBook(allowed_lateness_ms)
    rule_book = RuleBook()
    for rule in rules:
        rule_book.put(rule if isinstance(rule, RuleRecord) else RuleRecord(rule=rule))
    fired: list[RuleFired] = []
    for tick in ticks:
        fired += step(book, rule_book, tick)
    if close_at_end:
        fired += close_all(book, rule_book)
    return Folded(candles=book.drain(), fired=fired, late=book.late, duplicates=book.duplicates)
