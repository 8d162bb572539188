"""From raw tick records to candles and fired rules: decoding, folding, counting; no I/O.

The local runner feeds it Kafka records; the Flink job can feed it the same
bytes. It only decides *what* to emit; the caller does the emitting. Every
tick is checked (:func:`dexorder.market_validation.tick_problem`) before it
can touch the candle book: a bad one is counted by reason and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dexorder.contracts.rules import RuleFired
from dexorder.market_validation import DEFAULT_MAX_SKEW_MS, tick_problem
from dexorder.schemas import Candle, InvalidMessage, Tick, decode_tick
from streaming.candles import CandleBook
from streaming.engine import close_idle, step_many
from streaming.rules import RuleBook


@dataclass
class BatchResult:
    closed: list[Candle]
    touched: set[str]
    malformed: int
    #: ticks dropped by the validation rules in this batch, by reason
    invalid: dict[str, int] = field(default_factory=dict)


@dataclass
class TickPipeline:
    """Decode ticks, fold them into candles, report what closed and what moved."""

    allowed_lateness_ms: int
    #: how far beyond the wall clock a tick's time may be
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    book: CandleBook = field(init=False)
    malformed: int = 0
    #: ticks dropped by the validation rules since start, by reason
    invalid: dict[str, int] = field(default_factory=dict)
    #: people's market rules, evaluated on accepted ticks and closed candles (None: none)
    rules: RuleBook | None = None
    #: rules fired since the last :meth:`take_fired`
    fired: list[RuleFired] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book = CandleBook(self.allowed_lateness_ms)

    def feed(self, values: Iterable[bytes], now_ms: int) -> BatchResult:
        """Fold one batch of encoded ticks that arrived at wall-clock ``now_ms``."""
        bad = 0
        invalid: dict[str, int] = {}

        def ticks() -> Iterator[Tick]:
            nonlocal bad
            for value in values:
                try:
                    tick = decode_tick(value)
                except InvalidMessage:
                    bad += 1
                    continue
                problem = tick_problem(tick, now_ms, self.max_skew_ms)
                if problem is None:
                    yield tick
                else:
                    invalid[problem] = invalid.get(problem, 0) + 1

        if self.rules is None:
            touched = self.book.add_many(ticks(), now_ms)
        else:
            touched = step_many(self.book, self.rules, ticks(), now_ms, self.fired)
        self.malformed += bad
        for reason, n in invalid.items():
            self.invalid[reason] = self.invalid.get(reason, 0) + n
        return BatchResult(self.book.drain(), touched, bad, invalid)

    def idle(self, now_ms: int) -> list[Candle]:
        """Close the candles of quiet tickers (call when caught up with the input)."""
        if self.rules is None:
            self.book.advance_idle(now_ms)
        else:
            self.fired += close_idle(self.book, self.rules, now_ms)
        return self.book.drain()

    def take_fired(self) -> list[RuleFired]:
        """Return and forget the rules fired since the last call."""
        out, self.fired = self.fired, []
        return out
