"""What the Flink job does for one ticker: pure, no PyFlink, so it is unit-tested in the main venv.

The job keys the ticks by ticker and hands each one to :class:`TickerFold`, whose state for
that ticker (:class:`KeyState`) lives in a Flink ``ValueState``. The fold drives the very
same :class:`~streaming.candles.CandleBook` the local runner drives, holding just the one
ticker's :class:`~streaming.candles.TickerBook`, so the candle semantics (dedup by trade id,
the ticker's own watermark, late drops, open/close by (trade time, trade id), higher
timeframes from closed 1m) are that module's, not a second copy.

Three moments move a ticker's candles:

* a tick (:meth:`TickerFold.on_tick`);
* wall-clock time with no tick (:meth:`TickerFold.on_idle`, the local runner's idle close,
  from a processing-time timer: a quiet ticker's last candles still close);
* the end of a bounded input (:meth:`TickerFold.on_end`, from the event-time timer that
  Flink's final watermark fires): every open candle closes, as the local runner's idle
  close does once it has caught up with a finished input.
"""

from __future__ import annotations

import msgspec

from dexorder.schemas import Candle, Tick
from streaming.candles import CandleBook, TickerBook

#: An event-time timer at the end of time: Flink fires it with the final watermark of a
#: bounded input (Long.MAX_VALUE), never before.
END_OF_INPUT = 2**63 - 1
#: A watermark past every candle's end (the book's "never" is 2**62).
_CLOSE_ALL = 2**62 + 2**61


class KeyState(msgspec.Struct, gc=False):
    """Everything the job keeps for one ticker (one Flink ``ValueState`` value)."""

    book: TickerBook
    #: wall-clock ms of the last live (open-candle) update sent, and whether one is owed
    live_at: int = 0
    live_owed: bool = False
    #: wall-clock ms the pending processing-time timer fires at (0: none pending)
    timer_at: int = 0


class Folded(msgspec.Struct, gc=False):
    """What one step produced: closed candles (to ``market.candles`` and the relay), and
    whether the tick was folded in (False: a duplicate or late tick, dropped)."""

    closed: list[Candle]
    accepted: bool = True
    late: bool = False
    duplicate: bool = False


class TickerFold:
    """One subtask's folding logic; the state of each ticker is passed in and out.

    One :class:`CandleBook` is reused for every key: before each step it is pointed at the
    key's :class:`TickerBook` (no copy), so per tick there is no serialization here at all;
    Flink serializes the state when it flushes its state cache.
    """

    def __init__(self, allowed_lateness_ms: int) -> None:
        self._book = CandleBook(allowed_lateness_ms)

    def new_state(self, tick: Tick) -> KeyState:
        return KeyState(TickerBook(tick.exchange, tick.symbol))

    def on_tick(self, state: KeyState, tick: Tick, now_ms: int) -> Folded:
        """Fold ``tick`` (arrived at wall-clock ``now_ms``) into its ticker's state."""
        book = self._book
        book.tickers = {tick.ticker: state.book}
        late, dup = book.late, book.duplicates
        accepted = book.add(tick)
        if accepted:
            state.book.seen_at = now_ms
        return Folded(
            book.drain(),
            accepted,
            late=book.late != late,
            duplicate=book.duplicates != dup,
        )

    def on_idle(self, state: KeyState, now_ms: int) -> list[Candle]:
        """Close what the wall-clock time since the ticker's newest tick lets close."""
        book = self._book
        book.tickers = {_key(state.book): state.book}
        book.advance_idle(now_ms)
        return book.drain()

    def on_end(self, state: KeyState) -> list[Candle]:
        """The input ended: close every open candle of the ticker."""
        book = self._book
        key = _key(state.book)
        book.tickers = {key: state.book}
        book.advance(key, _CLOSE_ALL)
        return book.drain()

    def open_candles(self, state: KeyState) -> list[Candle]:
        """The ticker's open candle of every timeframe (the live view on the relay)."""
        book = self._book
        key = _key(state.book)
        book.tickers = {key: state.book}
        return book.open_candles(key)


def _key(book: TickerBook) -> str:
    return f"{book.exchange}:{book.symbol}"
