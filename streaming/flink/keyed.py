"""What the Flink job does for one ticker: pure, no PyFlink, so it is unit-tested in the main venv.

The job keys the ticks by ticker and hands each one to :class:`TickerFold`, whose state for
that ticker (:class:`KeyState`) lives in a Flink ``ValueState``. The fold drives the very
same :class:`~streaming.candles.CandleBook` the local runner drives, holding just the one
ticker's :class:`~streaming.candles.TickerBook`, so the candle semantics (dedup by trade id,
the ticker's own watermark, late drops, open/close by (trade time, trade id), higher
timeframes from closed 1m) are that module's, not a second copy; and the ticker's rules are
one :class:`~streaming.rules.TickerRules`, fed as :func:`streaming.engine.step` feeds them
(an accepted tick, then each candle it closed, oldest first).

Three moments move a ticker's candles:

* a tick (:meth:`TickerFold.on_tick`);
* wall-clock time with no tick (:meth:`TickerFold.on_idle`, the local runner's idle close,
  from a processing-time timer: a quiet ticker's last candles still close);
* the end of a bounded input (:meth:`TickerFold.on_end`, from the event-time timer that
  Flink's final watermark fires): every open candle closes, as the local runner's idle
  close does once it has caught up with a finished input.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dexorder.contracts.rules import (
    BadRule,
    Rule,
    RuleFired,
    RuleRecord,
    decode_record,
    encode_record,
)
from dexorder.schemas import Candle, Tick
from streaming.candles import CandleBook, TickerBook
from streaming.rules import TickerRules, TickerState

#: An event-time timer at the end of time: Flink fires it with the final watermark of a
#: bounded input (Long.MAX_VALUE), never before.
END_OF_INPUT = 2**63 - 1
#: A watermark past every candle's end (the book's "never" is 2**62).
_CLOSE_ALL = 2**62 + 2**61


class KeySnapshot(msgspec.Struct, array_like=True):
    """:class:`KeyState` as it is checkpointed (MessagePack)."""

    book: TickerBook
    rules: TickerState
    live_at: int
    live_owed: bool
    timer_at: int


class KeyState:
    """Everything the job keeps for one ticker (one Flink ``ValueState`` value).

    Flink's Python state cache holds this object between ticks and pickles it only when it
    flushes (a bundle's end, a checkpoint); pickling it writes the MessagePack
    :class:`KeySnapshot` (the books' own checkpoint formats), not Python internals.
    """

    __slots__ = ("book", "live_at", "live_owed", "rules", "timer_at")

    def __init__(self, book: TickerBook, rules: TickerRules) -> None:
        self.book = book
        self.rules = rules
        #: wall-clock ms of the last live (open-candle) update sent, and whether one is owed
        self.live_at = 0
        self.live_owed = False
        #: wall-clock ms the pending processing-time timer fires at (0: none pending)
        self.timer_at = 0

    @property
    def ticker(self) -> str:
        return self.rules.ticker

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(
            KeySnapshot(self.book, self.rules.state(), self.live_at, self.live_owed, self.timer_at)
        )

    @classmethod
    def restore(cls, data: bytes) -> KeyState:
        snap = msgspec.msgpack.decode(data, type=KeySnapshot)
        state = cls(snap.book, TickerRules.from_state(snap.rules))
        state.live_at, state.live_owed, state.timer_at = snap.live_at, snap.live_owed, snap.timer_at
        return state

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (KeyState.restore, (self.snapshot(),))


class Folded(msgspec.Struct, gc=False):
    """What one step produced: closed candles (to ``market.candles`` and the relay), fired
    rules, and whether the tick was folded in (False: a duplicate or late tick, dropped)."""

    closed: list[Candle]
    fired: list[RuleFired]
    accepted: bool = True
    late: bool = False
    duplicate: bool = False


class TickerFold:
    """One subtask's folding logic; the state of each ticker is passed in and out.

    One :class:`CandleBook` is reused for every key: before each step it is pointed at the
    key's :class:`TickerBook` (no copy), so per tick there is no serialization here at all.
    ``initial_rules`` (by ticker) are put into a ticker's state when it is made: the rules
    in force from the start, for a replay of files.
    """

    def __init__(
        self, allowed_lateness_ms: int, initial_rules: dict[str, list[Rule]] | None = None
    ) -> None:
        self._book = CandleBook(allowed_lateness_ms)
        self._initial = initial_rules or {}

    def new_state(self, ticker: str) -> KeyState:
        exchange, _, symbol = ticker.partition(":")
        state = KeyState(TickerBook(exchange, symbol), TickerRules(ticker))
        for rule in self._initial.get(ticker, ()):
            state.rules.put(rule)
        return state

    def on_tick(self, state: KeyState, tick: Tick, now_ms: int) -> Folded:
        """Fold ``tick`` (arrived at wall-clock ``now_ms``) into its ticker's state."""
        book = self._book
        book.tickers = {state.ticker: state.book}
        late, dup = book.late, book.duplicates
        if not book.add(tick):
            return Folded([], [], False, late=book.late != late, duplicate=book.duplicates != dup)
        state.book.seen_at = now_ms
        closed = book.drain()
        return Folded(closed, state.rules.on_tick(tick) + self._on_closed(state, closed))

    def on_idle(self, state: KeyState, now_ms: int) -> Folded:
        """Close what the wall-clock time since the ticker's newest tick lets close."""
        book = self._book
        book.tickers = {state.ticker: state.book}
        book.advance_idle(now_ms)
        closed = book.drain()
        return Folded(closed, self._on_closed(state, closed))

    def on_end(self, state: KeyState) -> Folded:
        """The input ended: close every open candle of the ticker."""
        book = self._book
        book.tickers = {state.ticker: state.book}
        book.advance(state.ticker, _CLOSE_ALL)
        closed = book.drain()
        return Folded(closed, self._on_closed(state, closed))

    @staticmethod
    def _on_closed(state: KeyState, closed: list[Candle]) -> list[RuleFired]:
        fired: list[RuleFired] = []
        for candle in closed:
            fired += state.rules.on_candle(candle)
        return fired

    @staticmethod
    def on_rule(state: KeyState, record: RuleRecord | None, rule_id: str) -> None:
        """A ``market.rules`` change for this ticker: a record (active: put; fired: gone) or
        a deletion (``record`` None)."""
        if record is None or record.fired is not None:
            state.rules.remove(rule_id)
        else:
            state.rules.put(record.rule)

    def open_candles(self, state: KeyState) -> list[Candle]:
        """The ticker's open candle of every timeframe (the live view on the relay)."""
        book = self._book
        book.tickers = {state.ticker: state.book}
        return book.open_candles(state.ticker)


#: a rule change routed to a ticker: (ticker, rule id, RuleRecord JSON; empty: deleted)
RuleChange = tuple[str, str, bytes]


class Routed(msgspec.Struct):
    """Where a ``market.rules`` record goes: the changes for the tickers' states, and the
    rule's ticker from now on (None: forgotten); ``bad``: not a rule, dropped."""

    ticker: str | None
    changes: list[RuleChange]
    bad: bool = False


def route_rule(rule_id: str, old_ticker: str | None, value: bytes | None) -> Routed:
    """Route one ``market.rules`` record (keyed by ``rule_id``) to the ticker its rule is on.

    A tombstone (``value`` None) carries no ticker: it goes to ``old_ticker``, the one the
    rule was last seen on. A rule moved to another ticker is deleted on the old one. A value
    that is not a rule, or a rule filed under another rule's id, changes nothing."""
    if value is None:
        return Routed(None, [] if old_ticker is None else [(old_ticker, rule_id, b"")])
    try:
        record = decode_record(value)
    except BadRule:
        return Routed(old_ticker, [], bad=True)
    if record.rule.id != rule_id:
        return Routed(old_ticker, [], bad=True)
    ticker = record.rule.ticker
    changes: list[RuleChange] = []
    if old_ticker is not None and old_ticker != ticker:
        changes.append((old_ticker, rule_id, b""))
    changes.append((ticker, rule_id, encode_record(record)))
    return Routed(ticker, changes)
