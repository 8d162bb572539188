"""People's market rules, evaluated: pure, no I/O (the local runner and the Flink job).

The contract is :mod:`dexorder.contracts.rules`; this module says how a rule meets the
market. Everything is per ticker (:class:`TickerRules`), so the Flink job keeps one per
key; :class:`RuleBook` is the local runner's map of them.

Feed it the ticks the candle book *accepted* (:meth:`streaming.candles.CandleBook.add`
returned True), in arrival order, and the closed candles; each call returns the rules
that fired, ordered by rule id. A fired rule leaves the book: it fires once.

Semantics, exactly (the naive reference in the tests says the same in a loop):

* A tick at event time ``ts`` can fire a rule only when ``ts >= rule.created_at``; a
  closed candle only when its end (open time + timeframe) is ``>= created_at``.
* Price levels: ``price_cross`` ``above`` fires at ``price >= level``, ``below`` at
  ``price <= level``. Order triggers: a limit or take-profit buy fires at
  ``price <= level`` and fills at ``min(level, price)``, a sell at ``price >= level``
  filling at ``max(level, price)``; a stop-loss sell fires at ``price <= level``, a buy
  at ``price >= level``, both filling at the tick's price.
* ``percent_move`` over a window of ``window_ms``: each accepted tick is stamped with
  the ticker's clock, its newest trade time so far (the tick's own time when ticks come
  in order), and the window holds the ticks stamped within ``window_ms`` of the newest
  stamp, the tick included. ``up`` fires at ``price >= low * (1 + percent / 100)``,
  ``down`` at ``price <= high * (1 - percent / 100)``, ``either`` at either. A ticker's
  price history starts when its first percent-move rule is put and goes when its last one
  does; it keeps what the longest window then watched needs (a longer window put later
  sees only what was kept). A checkpoint keeps it.
* ``volume_spike``: on a closed candle of its timeframe, fires when the candle's volume
  is ``> multiple * mean`` of the volumes of the ``lookback`` closed candles of that
  ticker and timeframe before it (kept for every ticker that has closed candles,
  whether or not a rule watches it); never with fewer than ``lookback`` of them.

Fast: price-level rules sit in two sorted lists per ticker (those that fire at or above
their level, those at or below), percent moves in lists sorted by percent per window, so
a tick costs O(log n + fired), not O(rules). Rules whose ``created_at`` lies beyond the
ticker's clock wait in a heap outside the index until the clock gets there.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from itertools import islice

import msgspec

from dexorder.contracts.rules import (
    MAX_LOOKBACK,
    OrderTrigger,
    PercentMove,
    PriceCross,
    Rule,
    RuleFired,
    RuleRecord,
    VolumeSpike,
)
from dexorder.markets import Timeframe
from dexorder.schemas import Candle, Tick

_NEVER_SEEN = -(2**62)
_encode = msgspec.msgpack.Encoder().encode
_Entry = tuple[float, str]  # (level / percent / multiple, rule id), sorted
_Holds = Callable[[float], bool]  # a condition on an entry's sort value
#: a history list drops its forgotten head once it is this long and half the list
_COMPACT_AT = 512


def fires_at_or_above(rule: Rule) -> bool | None:
    """Whether a price-level rule fires at ``price >= level`` (True) or ``<= level``
    (False); None for the rules that are not about one price level."""
    cond = rule.condition
    if isinstance(cond, PriceCross):
        return cond.direction == "above"
    if isinstance(cond, OrderTrigger):
        if cond.order_type == "stop_loss":
            return cond.side == "buy"
        return cond.side == "sell"
    return None


def fill_price(cond: OrderTrigger, price: float) -> float:
    """The price an order fills at when a tick at ``price`` triggers it."""
    if cond.order_type == "stop_loss":
        return price
    return min(cond.level, price) if cond.side == "buy" else max(cond.level, price)


def tick_fired(rule: Rule, tick: Tick) -> RuleFired:
    """The firing of a tick-driven rule at ``tick``."""
    cond = rule.condition
    fill = fill_price(cond, tick.price) if isinstance(cond, OrderTrigger) else None
    return RuleFired(rule=rule, fired_at=tick.ts, price=tick.price, fill_price=fill)


def percent_up(low: float, price: float, percent: float) -> bool:
    return price >= low * (1.0 + percent / 100.0)


def percent_down(high: float, price: float, percent: float) -> bool:
    return price <= high * (1.0 - percent / 100.0)


def volume_spikes(volume: float, mean: float, multiple: float) -> bool:
    return volume > multiple * mean


def mean_last(volumes: Iterable[float], size: int, n: int) -> float:
    """The mean of the last ``n`` of ``volumes`` (``size`` of them), summed oldest first."""
    return sum(islice(volumes, size - n, None)) / n


def candle_end(candle: Candle) -> int:
    return candle.open_time + Timeframe(candle.timeframe).ms


class HistoryState(msgspec.Struct, array_like=True):
    """A ticker's price history for its percent moves, as checkpointed."""

    low_stamps: list[int]
    lows: list[float]
    high_stamps: list[int]
    highs: list[float]


class TickerState(msgspec.Struct):
    """What a :class:`TickerRules` checkpoints (its indexes are rebuilt from the rules)."""

    ticker: str
    max_ts: int = _NEVER_SEEN
    rules: list[Rule] = []
    history: HistoryState | None = None
    volumes: dict[str, list[float]] = {}


class _EncodedState(msgspec.Struct):
    """:class:`TickerState` with its rules and volumes already encoded (the same msgpack):
    they change seldom, so a checkpoint every second re-encodes only what moved."""

    ticker: str
    max_ts: int
    rules: msgspec.Raw
    history: HistoryState | None
    volumes: msgspec.Raw


class _History:
    """A ticker's recent prices as two monotonic queues (stamps ascending): the lows
    (prices strictly increasing) and the highs (strictly decreasing). The lowest price
    stamped at or after ``t`` is the first low stamped at or after ``t`` (a bisection),
    so one pair serves every window length; it keeps what the longest window needs.
    Lists with a moving head rather than deques: bisection needs indexing."""

    __slots__ = ("high_head", "high_stamps", "highs", "low_head", "low_stamps", "lows")

    def __init__(self) -> None:
        self.low_stamps: list[int] = []
        self.lows: list[float] = []
        self.low_head = 0
        self.high_stamps: list[int] = []
        self.highs: list[float] = []
        self.high_head = 0

    def push(self, stamp: int, price: float, keep_ms: int) -> None:
        """Add a price stamped ``stamp`` (not before the last), forgetting what is older
        than ``keep_ms`` before it."""
        cutoff = stamp - keep_ms
        # the lows: drop the tail at or above the price (never the lowest again), append
        stamps, prices, head = self.low_stamps, self.lows, self.low_head
        end = len(prices)
        if end > head and prices[-1] >= price:
            end -= 1
            while end > head and prices[end - 1] >= price:
                end -= 1
            del stamps[end:], prices[end:]
        stamps.append(stamp)
        prices.append(price)
        if stamps[head] < cutoff:
            head = bisect_left(stamps, cutoff, head)
            if head > _COMPACT_AT and head * 2 > len(stamps):
                del stamps[:head], prices[:head]
                head = 0
            self.low_head = head
        # the highs, the same way up
        stamps, prices, head = self.high_stamps, self.highs, self.high_head
        end = len(prices)
        if end > head and prices[-1] <= price:
            end -= 1
            while end > head and prices[end - 1] <= price:
                end -= 1
            del stamps[end:], prices[end:]
        stamps.append(stamp)
        prices.append(price)
        if stamps[head] < cutoff:
            head = bisect_left(stamps, cutoff, head)
            if head > _COMPACT_AT and head * 2 > len(stamps):
                del stamps[:head], prices[:head]
                head = 0
            self.high_head = head

    def state(self) -> HistoryState:
        return HistoryState(
            self.low_stamps[self.low_head :],
            self.lows[self.low_head :],
            self.high_stamps[self.high_head :],
            self.highs[self.high_head :],
        )

    @classmethod
    def from_state(cls, state: HistoryState) -> _History:
        history = cls()
        history.low_stamps, history.lows = list(state.low_stamps), list(state.lows)
        history.high_stamps, history.highs = list(state.high_stamps), list(state.highs)
        return history


class _Window:
    """The percent-move rules of one window length (sorted by percent, per direction)."""

    __slots__ = ("down", "ms", "up", "users")

    def __init__(self, ms: int) -> None:
        self.ms = ms
        self.up: list[_Entry] = []
        self.down: list[_Entry] = []
        self.users = 0  # rules (indexed or pending) on this window


def _remove_entry(entries: list[_Entry], entry: _Entry) -> None:
    i = bisect_left(entries, entry)
    if i < len(entries) and entries[i] == entry:
        del entries[i]


class TickerRules:
    """One ticker's active rules, their indexes, percent-move windows and recent volumes."""

    __slots__ = (
        "_rules_blob",
        "_volumes_blob",
        "above",
        "below",
        "history",
        "least_moves",
        "longest",
        "max_ts",
        "pending",
        "rules",
        "spikes",
        "ticker",
        "volumes",
        "waiting",
        "windows",
    )

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        #: the ticker's clock: the newest accepted trade time
        self.max_ts = _NEVER_SEEN
        #: every active rule (indexed or pending), by id
        self.rules: dict[str, Rule] = {}
        #: (created_at, id) of rules not in the indexes yet (created after the clock), a heap
        self.pending: list[tuple[int, str]] = []
        #: their ids
        self.waiting: set[str] = set()
        #: the encoded rules and volumes as of the last snapshot (None: changed since)
        self._rules_blob: msgspec.Raw | None = None
        self._volumes_blob: msgspec.Raw | None = None
        #: price-level rules firing at price >= level / <= level, sorted by level
        self.above: list[_Entry] = []
        self.below: list[_Entry] = []
        self.windows: dict[int, _Window] = {}
        #: the prices the windows look at, while any percent-move rule is here
        self.history: _History | None = None
        #: the longest window length (what the history keeps)
        self.longest = 0
        #: the least percent of any up / down move rule (None: to be worked out again)
        self.least_moves: tuple[float, float] | None = None
        #: closed candles' volumes per timeframe, oldest first (at most MAX_LOOKBACK)
        self.volumes: dict[str, deque[float]] = {}
        #: volume-spike rules by (timeframe, lookback), sorted by multiple
        self.spikes: dict[tuple[str, int], list[_Entry]] = {}

    def __len__(self) -> int:
        return len(self.rules)

    # -- rules in and out --------------------------------------------------

    def put(self, rule: Rule) -> None:
        """Add ``rule`` (replacing one with its id; the same rule again changes nothing)."""
        old = self.rules.get(rule.id)
        if old is not None:
            if old == rule:
                return
            self.remove(rule.id)
        self.rules[rule.id] = rule
        self._rules_blob = None
        cond = rule.condition
        if isinstance(cond, PercentMove):
            self._watch(cond.window_ms)
        if rule.created_at <= self.max_ts:
            self._index(rule)
        else:
            heapq.heappush(self.pending, (rule.created_at, rule.id))
            self.waiting.add(rule.id)

    def remove(self, rule_id: str) -> Rule | None:
        """Take the rule with ``rule_id`` out; return it (None when there was none)."""
        rule = self.rules.pop(rule_id, None)
        if rule is None:
            return None
        self._rules_blob = None
        if rule_id in self.waiting:
            # dropped from the heap too, so the heap holds only waiting rules
            self.waiting.discard(rule_id)
            self.pending = [p for p in self.pending if p[1] != rule_id]
            heapq.heapify(self.pending)
        else:
            self._unindex(rule)
        cond = rule.condition
        if isinstance(cond, PercentMove):
            self._unwatch(cond.window_ms)
        return rule

    def _watch(self, ms: int) -> None:
        window = self.windows.get(ms)
        if window is None:
            window = self.windows[ms] = _Window(ms)
            self.longest = max(self.windows)
            if self.history is None:
                self.history = _History()
        window.users += 1

    def _unwatch(self, ms: int) -> None:
        window = self.windows[ms]
        window.users -= 1
        if not window.users:
            del self.windows[ms]
            self.longest = max(self.windows, default=0)
            if not self.windows:
                self.history = None

    def _activate(self, until: int) -> None:
        """Index the waiting rules created at or before ``until``. (An indexed rule may
        still be newer than an out-of-order tick: the scans check ``created_at``.)"""
        pending = self.pending
        while pending and pending[0][0] <= until:
            rule_id = heapq.heappop(pending)[1]
            self.waiting.discard(rule_id)
            self._index(self.rules[rule_id])

    def _index(self, rule: Rule) -> None:
        cond = rule.condition
        if isinstance(cond, PriceCross | OrderTrigger):
            insort(self.above if fires_at_or_above(rule) else self.below, (cond.level, rule.id))
        elif isinstance(cond, PercentMove):
            window = self.windows[cond.window_ms]
            if cond.direction != "down":
                insort(window.up, (cond.percent, rule.id))
            if cond.direction != "up":
                insort(window.down, (cond.percent, rule.id))
            self.least_moves = None
        elif isinstance(cond, VolumeSpike):
            group = self.spikes.setdefault((cond.timeframe, cond.lookback), [])
            insort(group, (cond.multiple, rule.id))

    def _unindex(self, rule: Rule) -> None:
        cond = rule.condition
        if isinstance(cond, PriceCross | OrderTrigger):
            entries = self.above if fires_at_or_above(rule) else self.below
            _remove_entry(entries, (cond.level, rule.id))
        elif isinstance(cond, PercentMove):
            window = self.windows[cond.window_ms]
            _remove_entry(window.up, (cond.percent, rule.id))
            _remove_entry(window.down, (cond.percent, rule.id))
            self.least_moves = None
        elif isinstance(cond, VolumeSpike):
            key = (cond.timeframe, cond.lookback)
            group = self.spikes[key]
            _remove_entry(group, (cond.multiple, rule.id))
            if not group:
                del self.spikes[key]

    # -- evaluation --------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[RuleFired]:
        """Evaluate an accepted tick of this ticker; the fired rules leave the book."""
        ts, price = tick.ts, tick.price
        if ts > self.max_ts:
            self.max_ts = ts
            if self.pending and self.pending[0][0] <= ts:
                self._activate(ts)
        fired: list[str] = []
        above = self.above
        if above and above[0][0] <= price:
            fired += self._scan_prefix(above, ts, lambda level: level <= price)
        below = self.below
        if below and below[-1][0] >= price:
            fired += self._scan_suffix(below, ts, price)
        history = self.history
        if history is not None:
            stamp = self.max_ts
            history.push(stamp, price, self.longest)
            least = self.least_moves
            if least is None:
                least = self.least_moves = self._least_moves()
            # Every window's low is at least the history's lowest and its rules' percents at
            # least the least, so when even these cannot fire, no window's rules can (and
            # the same for the highs): most ticks stop here.
            if price >= history.lows[history.low_head] * (
                1.0 + least[0] / 100.0
            ) or price <= history.highs[history.high_head] * (1.0 - least[1] / 100.0):
                fired += self._moves(ts, price, stamp, history)
        if not fired:
            return []
        out = []
        for rule_id in sorted(set(fired)):
            rule = self.rules[rule_id]
            if isinstance(rule.condition, PercentMove):
                self._unindex(rule)  # an "either" rule sits in both lists
            self._drop(rule)
            out.append(tick_fired(rule, tick))
        return out

    def _least_moves(self) -> tuple[float, float]:
        """The least percent of the up moves and of the down moves (inf: none)."""
        ups = [w.up[0][0] for w in self.windows.values() if w.up]
        downs = [w.down[0][0] for w in self.windows.values() if w.down]
        # a down factor (1 - p / 100) at or below 0 never fires: capping at 100 says so
        return (min(ups, default=math.inf), min([*downs, 100.0]))

    def _moves(self, ts: int, price: float, stamp: int, history: _History) -> list[str]:
        """The percent-move rules a tick at ``price`` fires, window by window."""
        fired: list[str] = []
        low_stamps, lows, low_head = history.low_stamps, history.lows, history.low_head
        high_stamps, highs, high_head = history.high_stamps, history.highs, history.high_head
        for window in self.windows.values():
            up, down = window.up, window.down
            if up:
                low = lows[bisect_left(low_stamps, stamp - window.ms, low_head)]
                if price >= low * (1.0 + up[0][0] / 100.0):  # percent_up, inlined
                    fired += self._scan_prefix(up, ts, partial(percent_up, low, price))
            if down:
                high = highs[bisect_left(high_stamps, stamp - window.ms, high_head)]
                if price <= high * (1.0 - down[0][0] / 100.0):  # percent_down, inlined
                    fired += self._scan_prefix(down, ts, partial(percent_down, high, price))
        return fired

    def _scan_prefix(self, entries: list[_Entry], ts: int, holds: _Holds) -> list[str]:
        """Take the rules of the prefix of ``entries`` where ``holds`` and the rule is
        not newer than ``ts``; return their ids."""
        rules = self.rules
        i, n = 0, len(entries)
        fired: list[str] = []
        kept: list[_Entry] = []
        while i < n and holds(entries[i][0]):
            entry = entries[i]
            if rules[entry[1]].created_at <= ts:
                fired.append(entry[1])
            else:
                kept.append(entry)
            i += 1
        entries[:i] = kept
        return fired

    def _scan_suffix(self, entries: list[_Entry], ts: int, price: float) -> list[str]:
        """Take the rules of the suffix of ``entries`` at levels ``>= price`` that are not
        newer than ``ts``; return their ids."""
        rules = self.rules
        i = len(entries)
        while i and entries[i - 1][0] >= price:
            i -= 1
        fired: list[str] = []
        kept: list[_Entry] = []
        for entry in entries[i:]:
            if rules[entry[1]].created_at <= ts:
                fired.append(entry[1])
            else:
                kept.append(entry)
        entries[i:] = kept
        return fired

    def _drop(self, rule: Rule) -> None:
        """Forget a fired rule already out of its index."""
        del self.rules[rule.id]
        self._rules_blob = None
        if isinstance(rule.condition, PercentMove):
            self._unwatch(rule.condition.window_ms)

    def on_candle(self, candle: Candle) -> list[RuleFired]:
        """Evaluate a closed candle of this ticker, then remember its volume."""
        tf = candle.timeframe
        history = self.volumes.get(tf)
        if history is None:
            history = self.volumes[tf] = deque(maxlen=MAX_LOOKBACK)
        out: list[RuleFired] = []
        end = candle_end(candle)
        if self.pending and self.pending[0][0] <= end:
            self._activate(end)  # a quiet ticker's candle closes without a tick
        if self.spikes:
            size = len(history)
            volume = candle.volume
            fired: list[tuple[str, float]] = []
            for (group_tf, lookback), entries in list(self.spikes.items()):
                if group_tf != tf or size < lookback:
                    continue
                mean = mean_last(history, size, lookback)
                taken = self._scan_prefix(entries, end, partial(volume_spikes, volume, mean))
                fired += [(rule_id, mean) for rule_id in taken]
                if not entries:
                    del self.spikes[(group_tf, lookback)]
            for rule_id, mean in sorted(fired):
                rule = self.rules[rule_id]
                self._drop(rule)
                out.append(
                    RuleFired(
                        rule=rule,
                        fired_at=end,
                        price=candle.close,
                        volume=candle.volume,
                        average=mean,
                    )
                )
        history.append(candle.volume)
        self._volumes_blob = None
        return out

    # -- checkpoints -------------------------------------------------------

    def state(self) -> TickerState:
        return TickerState(
            ticker=self.ticker,
            max_ts=self.max_ts,
            rules=list(self.rules.values()),
            history=None if self.history is None else self.history.state(),
            volumes={tf: list(v) for tf, v in self.volumes.items()},
        )

    def encoded_state(self) -> _EncodedState:
        """:meth:`state`, with the encodings of the rules and volumes kept until they change."""
        if self._rules_blob is None:
            self._rules_blob = msgspec.Raw(_encode(list(self.rules.values())))
        if self._volumes_blob is None:
            volumes = {tf: list(v) for tf, v in self.volumes.items()}
            self._volumes_blob = msgspec.Raw(_encode(volumes))
        return _EncodedState(
            ticker=self.ticker,
            max_ts=self.max_ts,
            rules=self._rules_blob,
            history=None if self.history is None else self.history.state(),
            volumes=self._volumes_blob,
        )

    @classmethod
    def from_state(cls, state: TickerState) -> TickerRules:
        book = cls(state.ticker)
        book.max_ts = state.max_ts
        for tf, volumes in state.volumes.items():
            book.volumes[tf] = deque(volumes, maxlen=MAX_LOOKBACK)
        for rule in state.rules:
            book.put(rule)
        if book.history is not None and state.history is not None:
            book.history = _History.from_state(state.history)
        return book

    def snapshot(self) -> bytes:
        """This ticker's state as msgpack (Flink keeps it per key)."""
        return _encode(self.encoded_state())

    @classmethod
    def restore(cls, data: bytes) -> TickerRules:
        return cls.from_state(msgspec.msgpack.decode(data, type=TickerState))


class RuleBook:
    """Every ticker's :class:`TickerRules`, and which ticker each rule id is on."""

    def __init__(self) -> None:
        self.tickers: dict[str, TickerRules] = {}
        self._where: dict[str, str] = {}

    def __len__(self) -> int:
        """How many rules are active."""
        return len(self._where)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._where

    def get(self, rule_id: str) -> Rule | None:
        ticker = self._where.get(rule_id)
        return None if ticker is None else self.tickers[ticker].rules.get(rule_id)

    def rule_ids(self) -> set[str]:
        return set(self._where)

    def put(self, record: RuleRecord) -> None:
        """Apply a ``market.rules`` record: an active rule is added (or replaces the one
        with its id), a fired one is removed."""
        rule = record.rule
        if record.fired is not None:
            self.remove(rule.id)
            return
        ticker = self._where.get(rule.id)
        if ticker is not None and ticker != rule.ticker:
            self.remove(rule.id)
        self._ticker(rule.ticker).put(rule)
        self._where[rule.id] = rule.ticker

    def remove(self, rule_id: str) -> Rule | None:
        """Delete a rule (a tombstone); return it (None when there was none)."""
        ticker = self._where.pop(rule_id, None)
        if ticker is None:
            return None
        return self.tickers[ticker].remove(rule_id)

    def retain(self, rule_ids: set[str]) -> list[str]:
        """Remove every rule not in ``rule_ids``; return the ids removed."""
        gone = [rule_id for rule_id in self._where if rule_id not in rule_ids]
        for rule_id in gone:
            self.remove(rule_id)
        return gone

    def _ticker(self, ticker: str) -> TickerRules:
        book = self.tickers.get(ticker)
        if book is None:
            book = self.tickers[ticker] = TickerRules(ticker)
        return book

    def on_tick(self, tick: Tick, ticker: str | None = None) -> list[RuleFired]:
        """Evaluate an accepted tick (of ``ticker``, when the caller has the key at hand);
        return the rules it fired (they are gone now)."""
        key = f"{tick.exchange}:{tick.symbol}" if ticker is None else ticker
        book = self.tickers.get(key)
        if book is None:
            # kept for a ticker no rule watches yet: its clock stamps later windows
            book = self.tickers[key] = TickerRules(key)
        if not book.rules:
            # nothing to fire (and no history without a rule): only the clock moves
            if tick.ts > book.max_ts:
                book.max_ts = tick.ts
            return []
        fired = book.on_tick(tick)
        for f in fired:
            del self._where[f.rule.id]
        return fired

    def on_candle(self, candle: Candle) -> list[RuleFired]:
        """Evaluate a closed candle; return the rules it fired (they are gone now)."""
        fired = self._ticker(f"{candle.exchange}:{candle.symbol}").on_candle(candle)
        for f in fired:
            del self._where[f.rule.id]
        return fired

    def snapshot(self, tickers: Iterable[str] | None = None) -> bytes:
        """Serialize the state of ``tickers`` (all by default) as msgpack."""
        keys = self.tickers.keys() if tickers is None else tickers
        state = {k: self.tickers[k].encoded_state() for k in keys if k in self.tickers}
        return _encode(state)

    def restore(self, data: bytes) -> None:
        """Load tickers' state from :meth:`snapshot` output (replacing those tickers)."""
        for key, state in msgspec.msgpack.decode(data, type=dict[str, TickerState]).items():
            old = self.tickers.get(key)
            if old is not None:
                for rule_id in old.rules:
                    self._where.pop(rule_id, None)
            book = self.tickers[key] = TickerRules.from_state(state)
            for rule_id in book.rules:
                # a rule id lives on one ticker: a stale copy elsewhere goes
                other = self._where.get(rule_id)
                if other is not None and other != key:
                    self.tickers[other].remove(rule_id)
                self._where[rule_id] = key
