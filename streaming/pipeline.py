"""From raw tick records to candles: decoding, folding, counting; no I/O.

The local runner feeds it Kafka records; the Flink job can feed it the same
bytes. It only decides *what* to emit; the caller does the emitting.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dexorder.schemas import Candle, InvalidMessage, Tick, decode_tick
from streaming.candles import CandleBook


@dataclass
class BatchResult:
    closed: list[Candle]
    touched: set[str]
    malformed: int


@dataclass
class TickPipeline:
    """Decode ticks, fold them into candles, report what closed and what moved."""

    allowed_lateness_ms: int
    book: CandleBook = field(init=False)
    malformed: int = 0

    def __post_init__(self) -> None:
        self.book = CandleBook(self.allowed_lateness_ms)

    def feed(self, values: Iterable[bytes], now_ms: int) -> BatchResult:
        """Fold one batch of encoded ticks that arrived at wall-clock ``now_ms``."""
        bad = 0

        def ticks() -> Iterator[Tick]:
            nonlocal bad
            for value in values:
                try:
                    yield decode_tick(value)
                except InvalidMessage:
                    bad += 1

        touched = self.book.add_many(ticks(), now_ms)
        self.malformed += bad
        return BatchResult(self.book.drain(), touched, bad)

    def idle(self, now_ms: int) -> list[Candle]:
        """Close the candles of quiet tickers (call when caught up with the input)."""
        self.book.advance_idle(now_ms)
        return self.book.drain()
