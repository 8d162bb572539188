"""Rule evaluation (streaming/rules.py): every kind, fire-once, created_at gating,
checkpoints, and the indexed book against a naive loop over every rule."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from dexorder.markets import Timeframe
from dexorder.schemas import Candle, Tick
from streaming import rules as rules_module
from streaming.engine import fold
from streaming.rules import RuleBook, TickerRules

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000
BTC = "BINANCE:BTC/USDT"
ETH = "BINANCE:ETH/USDT"


def tick(price: float, ts: int, ticker: str = BTC, trade_id: str = "") -> Tick:
    exchange, _, symbol = ticker.partition(":")
    return Tick(
        exchange=exchange,
        symbol=symbol,
        trade_id=trade_id or f"{ts}-{price}",
        price=price,
        amount=1.0,
        ts=ts,
    )


def candle(volume: float, minute: int, tf: str = "1m", ticker: str = BTC) -> Candle:
    exchange, _, symbol = ticker.partition(":")
    return Candle(
        exchange=exchange,
        symbol=symbol,
        timeframe=tf,
        open_time=T0 + minute * Timeframe(tf).ms,
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=volume,
        trades=1,
        closed=True,
    )


def rule(
    rule_id: str, condition: Condition, created_at: int = T0, ticker: str = BTC, user: str = "al"
) -> Rule:
    return Rule(id=rule_id, user=user, ticker=ticker, condition=condition, created_at=created_at)


def book_of(*rules: Rule) -> RuleBook:
    book = RuleBook()
    for r in rules:
        book.put(RuleRecord(rule=r))
    return book


def ids(fired: list[RuleFired]) -> list[str]:
    return [f.rule.id for f in fired]


# -- each kind ------------------------------------------------------------------


def test_price_cross_fires_at_the_level_once() -> None:
    book = book_of(
        rule("up", PriceCross(direction="above", level=100.0)),
        rule("down", PriceCross(direction="below", level=90.0)),
    )
    assert book.on_tick(tick(99.99, T0 + 1)) == []
    fired = book.on_tick(tick(100.0, T0 + 2))
    assert ids(fired) == ["up"]
    assert (fired[0].fired_at, fired[0].price, fired[0].fill_price) == (T0 + 2, 100.0, None)
    assert book.on_tick(tick(101.0, T0 + 3)) == []  # fired once: gone
    assert ids(book.on_tick(tick(90.0, T0 + 4))) == ["down"]
    assert len(book) == 0 and book.on_tick(tick(50.0, T0 + 5)) == []


def test_order_triggers_fire_and_fill_by_type_and_side() -> None:
    def order(oid: str, order_type: str, side: str, level: float) -> Rule:
        return rule(
            oid,
            OrderTrigger(order_id=oid, order_type=order_type, side=side, quantity=1, level=level),  # type: ignore[arg-type]
        )

    book = book_of(
        order("limit-buy", "limit", "buy", 95.0),
        order("limit-sell", "limit", "sell", 105.0),
        order("tp-sell", "take_profit", "sell", 110.0),
        order("stop-sell", "stop_loss", "sell", 90.0),
        order("stop-buy", "stop_loss", "buy", 120.0),
    )
    assert book.on_tick(tick(100.0, T0 + 1)) == []
    # a gap down through two levels: the limit buy fills at the tick's better price
    fired = {f.rule.id: f for f in book.on_tick(tick(89.0, T0 + 2))}
    assert set(fired) == {"limit-buy", "stop-sell"}
    assert fired["limit-buy"].fill_price == 89.0
    assert fired["stop-sell"].fill_price == 89.0
    fired = {f.rule.id: f for f in book.on_tick(tick(111.5, T0 + 3))}
    assert set(fired) == {"limit-sell", "tp-sell"}
    assert fired["limit-sell"].fill_price == 111.5 and fired["tp-sell"].fill_price == 111.5
    assert book.on_tick(tick(119.99, T0 + 4)) == []
    stop_buy = book.on_tick(tick(120.0, T0 + 5))
    assert ids(stop_buy) == ["stop-buy"] and stop_buy[0].fill_price == 120.0


def test_percent_move_up_down_either_within_the_window() -> None:
    book = book_of(
        rule("up", PercentMove(percent=5, window_ms=10_000, direction="up")),
        rule("down", PercentMove(percent=5, window_ms=10_000, direction="down")),
        rule("either", PercentMove(percent=10, window_ms=10_000)),
    )
    assert book.on_tick(tick(100.0, T0)) == []
    assert book.on_tick(tick(104.9, T0 + 5_000)) == []
    # 100 left the window (older than 10 s before the tick): the low is 104.9 now
    assert book.on_tick(tick(105.0, T0 + 10_001)) == []
    fired = book.on_tick(tick(110.2, T0 + 10_002))
    assert ids(fired) == ["up"]
    # the high is 110.2: 5 % down from it is 104.69
    assert ids(book.on_tick(tick(104.0, T0 + 10_003))) == ["down"]
    # the low is 104 now: 10 % up from it is 114.4
    assert book.on_tick(tick(114.3, T0 + 10_004)) == []
    assert ids(book.on_tick(tick(114.5, T0 + 10_005))) == ["either"]


def test_percent_move_down_and_either() -> None:
    book = book_of(
        rule("down", PercentMove(percent=5, window_ms=10_000, direction="down")),
        rule("either", PercentMove(percent=10, window_ms=10_000)),
    )
    book.on_tick(tick(100.0, T0))
    assert book.on_tick(tick(95.01, T0 + 1)) == []
    assert ids(book.on_tick(tick(95.0, T0 + 2))) == ["down"]
    assert book.on_tick(tick(90.01, T0 + 3)) == []
    fired = book.on_tick(tick(90.0, T0 + 4))
    assert ids(fired) == ["either"] and fired[0].price == 90.0
    assert book.tickers[BTC].history is None  # no rule watches the prices: they are gone


def test_percent_move_window_starts_when_its_first_rule_is_put() -> None:
    book = book_of(rule("x", PriceCross(direction="above", level=1e9)))
    book.on_tick(tick(100.0, T0))
    book.put(RuleRecord(rule=rule("up", PercentMove(percent=5, window_ms=60_000, direction="up"))))
    assert book.on_tick(tick(104.0, T0 + 1)) == []  # the 100 tick came before the window
    assert ids(book.on_tick(tick(109.3, T0 + 2))) == ["up"]  # 109.3 >= 104 * 1.05


def test_volume_spike_against_the_mean_of_the_previous_candles() -> None:
    book = book_of(
        rule("spike", VolumeSpike(timeframe="5m", multiple=3, lookback=3)),
        rule("other-tf", VolumeSpike(timeframe="1h", multiple=1.1, lookback=1)),
    )
    assert book.on_candle(candle(100.0, 0, "5m")) == []  # fewer than 3 before it
    assert book.on_candle(candle(10.0, 1, "5m")) == []
    assert book.on_candle(candle(20.0, 2, "5m")) == []
    assert book.on_candle(candle(130.0, 3, "1m")) == []  # another timeframe
    assert book.on_candle(candle(130.0, 3, "5m")) == []  # mean 130/3: not above 3x
    # the mean of 10, 20, 130 is 53.33: 161 is above 3x
    fired = book.on_candle(candle(161.0, 4, "5m"))
    assert ids(fired) == ["spike"]
    f = fired[0]
    assert f.volume == 161.0 and f.average == (10.0 + 20.0 + 130.0) / 3
    assert f.fired_at == T0 + 5 * 300_000  # the candle's end


def test_created_at_gates_ticks_and_candles() -> None:
    created = T0 + 10_000
    book = book_of(
        rule("up", PriceCross(direction="above", level=100.0), created_at=created),
        rule("spike", VolumeSpike(multiple=1, lookback=1), created_at=created),
    )
    assert book.on_tick(tick(150.0, created - 1)) == []
    assert book.on_candle(candle(1.0, -1)) == []
    assert book.on_candle(candle(9.0, -2)) == []  # ends at T0 - 60 s: before the rule
    # an out-of-order tick older than the rule, after the clock passed it
    assert book.on_tick(tick(50.0, created + 5)) == []
    assert book.on_tick(tick(150.0, created - 2)) == []
    assert ids(book.on_tick(tick(150.0, created + 1))) == ["up"]
    # a quiet ticker's candle, closed without any newer tick, ends after created_at
    assert ids(book.on_candle(candle(10.0, 0))) == ["spike"]


def test_remove_put_fired_and_move_between_tickers() -> None:
    book = book_of(
        rule("a", PriceCross(direction="above", level=100.0)),
        rule("b", PriceCross(direction="above", level=100.0)),
        rule("c", PriceCross(direction="below", level=50.0)),
    )
    assert book.remove("a") is not None and book.remove("a") is None
    fired_b = RuleFired(rule=book.get("b"), fired_at=T0, price=100.0)  # type: ignore[arg-type]
    book.put(RuleRecord(rule=fired_b.rule, fired=fired_b))  # fired elsewhere: inactive
    moved = rule("c", PriceCross(direction="below", level=50.0), ticker=ETH)
    book.put(RuleRecord(rule=moved))
    assert book.rule_ids() == {"c"}
    assert book.on_tick(tick(200.0, T0 + 1)) == []
    assert book.on_tick(tick(10.0, T0 + 2)) == []  # c is on ETH now
    assert ids(book.on_tick(tick(10.0, T0 + 3, ETH))) == ["c"]


def test_putting_the_same_rule_again_keeps_its_window() -> None:
    r = rule("up", PercentMove(percent=5, window_ms=60_000, direction="up"))
    book = book_of(r)
    book.on_tick(tick(100.0, T0))
    book.put(RuleRecord(rule=r))  # the topic read again after a restart
    assert ids(book.on_tick(tick(105.0, T0 + 1))) == ["up"]


def test_retain_drops_rules_the_topic_no_longer_has() -> None:
    book = book_of(
        rule("a", PriceCross(direction="above", level=1.0)),
        rule("b", PriceCross(direction="above", level=1.0)),
    )
    assert book.retain({"b"}) == ["a"]
    assert ids(book.on_tick(tick(2.0, T0 + 1))) == ["b"]


def test_snapshot_restore_continues_exactly() -> None:
    rules = [
        rule("up", PercentMove(percent=5, window_ms=60_000, direction="up")),
        rule("spike", VolumeSpike(multiple=2, lookback=2)),
        rule("later", PriceCross(direction="above", level=100.0), created_at=T0 + 50),
        rule("eth", PriceCross(direction="below", level=10.0), ticker=ETH),
    ]
    book = book_of(*rules)
    book.on_tick(tick(100.0, T0))
    book.on_candle(candle(1.0, 0))
    book.on_candle(candle(3.0, 1))
    restored = RuleBook()
    restored.restore(book.snapshot())
    assert restored.rule_ids() == book.rule_ids()
    # one ticker alone, as the Flink job keeps it per key
    alone = TickerRules.restore(book.tickers[BTC].snapshot())
    for b in (book, restored):
        assert ids(b.on_tick(tick(105.0, T0 + 100))) == ["later", "up"]
        assert ids(b.on_candle(candle(4.1, 2))) == ["spike"]
    assert ids(alone.on_tick(tick(105.0, T0 + 100))) == ["later", "up"]
    assert ids(restored.on_tick(tick(9.0, T0 + 101, ETH))) == ["eth"]


def test_fold_feeds_only_accepted_ticks_and_closes_at_the_end() -> None:
    rules = [
        rule("up", PriceCross(direction="above", level=100.0)),
        rule("spike", VolumeSpike(multiple=1.5, lookback=1)),
    ]
    ticks = [
        tick(90.0, T0, trade_id="1"),
        tick(90.0, T0 + 60_000, trade_id="2"),
        tick(90.0, T0 + 60_001, trade_id="3"),
        tick(150.0, T0 + 60_001, trade_id="3"),  # a duplicate trade id: not accepted
        tick(150.0, T0 + 10_000, trade_id="4"),  # beyond the 2 s lateness: late
    ]
    out = fold(ticks, rules, 2_000)
    assert out.duplicates == 1 and out.late == 1
    # the minute after closes only at the end of input; 2 trades against 1 before
    assert ids(out.fired) == ["spike"]
    assert out.fired[0].fired_at == T0 + 120_000
    assert {(c.timeframe, c.open_time) for c in out.candles} >= {("1m", T0), ("1m", T0 + 60_000)}


# -- the index against a naive loop ----------------------------------------------


@dataclass
class Naive:
    """Every rule checked on every event, exactly as the module docstring says."""

    rules: dict[str, Rule] = field(default_factory=dict)
    clock: dict[str, int] = field(default_factory=dict)
    #: per ticker watched by a percent move: (stamp, price) of every tick, and the horizon
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    horizon: dict[str, int] = field(default_factory=dict)
    volumes: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def put(self, r: Rule) -> None:
        if self.rules.get(r.id) == r:
            return
        self.rules.pop(r.id, None)
        self._gc()
        if isinstance(r.condition, PercentMove) and r.ticker not in self.history:
            self.history[r.ticker] = []
            self.horizon[r.ticker] = -(2**62)
        self.rules[r.id] = r

    def remove(self, rule_id: str) -> None:
        self.rules.pop(rule_id, None)
        self._gc()

    def _longest(self, ticker: str) -> int:
        return max(
            (
                r.condition.window_ms
                for r in self.rules.values()
                if r.ticker == ticker and isinstance(r.condition, PercentMove)
            ),
            default=0,
        )

    def _gc(self) -> None:
        for ticker in list(self.history):
            if not self._longest(ticker):
                del self.history[ticker], self.horizon[ticker]

    def on_tick(self, t: Tick) -> list[RuleFired]:
        ticker, price, ts = t.ticker, t.price, t.ts
        clock = self.clock[ticker] = max(self.clock.get(ticker, ts), ts)
        if ticker in self.history:
            self.history[ticker].append((clock, price))
            horizon = max(self.horizon[ticker], clock - self._longest(ticker))
            self.horizon[ticker] = horizon
        fired = []
        for r in sorted(self.rules.values(), key=lambda r: r.id):
            if r.ticker != ticker or r.created_at > ts:
                continue
            c = r.condition
            hit = False
            fill = None
            if isinstance(c, PriceCross):
                hit = price >= c.level if c.direction == "above" else price <= c.level
            elif isinstance(c, OrderTrigger):
                at_or_above = (c.side == "buy") == (c.order_type == "stop_loss")
                hit = price >= c.level if at_or_above else price <= c.level
                if c.order_type == "stop_loss":
                    fill = price
                elif c.side == "buy":
                    fill = min(c.level, price)
                else:
                    fill = max(c.level, price)
            elif isinstance(c, PercentMove):
                since = max(clock - c.window_ms, self.horizon[ticker])
                prices = [p for s, p in self.history[ticker] if s >= since]
                up = price >= min(prices) * (1.0 + c.percent / 100.0)
                down = price <= max(prices) * (1.0 - c.percent / 100.0)
                hit = {"up": up, "down": down, "either": up or down}[c.direction]
            if hit:
                fired.append(RuleFired(rule=r, fired_at=ts, price=price, fill_price=fill))
        for f in fired:
            self.remove(f.rule.id)
        return fired

    def on_candle(self, c: Candle) -> list[RuleFired]:
        history = self.volumes.setdefault((c.ticker, c.timeframe), [])
        end = c.open_time + Timeframe(c.timeframe).ms
        fired = []
        for r in sorted(self.rules.values(), key=lambda r: r.id):
            v = r.condition
            if (
                r.ticker != c.ticker
                or not isinstance(v, VolumeSpike)
                or v.timeframe != c.timeframe
                or r.created_at > end
                or len(history) < v.lookback
            ):
                continue
            mean = sum(history[-v.lookback :]) / v.lookback
            if c.volume > v.multiple * mean:
                fired.append(
                    RuleFired(rule=r, fired_at=end, price=c.close, volume=c.volume, average=mean)
                )
        for f in fired:
            self.remove(f.rule.id)
        history.append(c.volume)
        return fired


LEVELS = st.sampled_from([90.0, 95.0, 99.5, 100.0, 100.5, 105.0, 110.0])
TICKERS = st.sampled_from([BTC, ETH])


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    kind = draw(st.sampled_from(["cross", "order", "move", "spike"]))
    if kind == "cross":
        return PriceCross(direction=draw(st.sampled_from(["above", "below"])), level=draw(LEVELS))
    if kind == "order":
        return OrderTrigger(
            order_id="o",
            order_type=draw(st.sampled_from(["limit", "stop_loss", "take_profit"])),
            side=draw(st.sampled_from(["buy", "sell"])),
            quantity=1.0,
            level=draw(LEVELS),
        )
    if kind == "move":
        return PercentMove(
            percent=draw(st.sampled_from([0.5, 1.0, 5.0, 10.0])),
            window_ms=draw(st.sampled_from([1_000, 5_000])),
            direction=draw(st.sampled_from(["up", "down", "either"])),
        )
    return VolumeSpike(
        timeframe=draw(st.sampled_from(["1m", "5m"])),
        multiple=draw(st.sampled_from([0.5, 1.0, 2.0])),
        lookback=draw(st.integers(1, 3)),
    )


#: how often each kind of event comes up in a scenario
EVENT_KINDS = [*["tick"] * 7, "candle", "put", "remove", "checkpoint", "checkpoint"]


@st.composite
def scenarios(draw: st.DrawFn) -> list[tuple[str, object]]:
    """Rules put at the start, then ticks (some out of order), closed candles, puts and
    removes mixed in, and one checkpoint round trip somewhere."""
    n_rules = draw(st.integers(1, 25))
    events: list[tuple[str, object]] = []
    for i in range(n_rules):
        events.append(
            (
                "put",
                rule(
                    f"r{i}",
                    draw(conditions()),
                    created_at=T0 + draw(st.integers(0, 8_000)),
                    ticker=draw(TICKERS),
                ),
            )
        )
    ts = T0
    minute = {BTC: 0, ETH: 0}
    for _ in range(draw(st.integers(1, 80))):
        what = draw(st.sampled_from(EVENT_KINDS))
        ticker = draw(TICKERS)
        if what == "tick":
            ts += draw(st.sampled_from([0, 1, 250, 500, 999, 1_000]))
            skew = draw(st.sampled_from([0, 0, 0, 300, 1_500]))
            events.append(
                ("tick", tick(draw(LEVELS) + draw(st.sampled_from([0, 0.2])), ts - skew, ticker))
            )
        elif what == "candle":
            minute[ticker] += 1
            tf = draw(st.sampled_from(["1m", "5m"]))
            events.append(
                (
                    "candle",
                    candle(draw(st.sampled_from([1.0, 2.0, 5.0])), minute[ticker], tf, ticker),
                )
            )
        elif what == "put":
            i = draw(st.integers(0, n_rules + 5))
            events.append(
                (
                    "put",
                    rule(
                        f"r{i}",
                        draw(conditions()),
                        created_at=ts + draw(st.integers(-500, 2_000)),
                        ticker=ticker,
                    ),
                )
            )
        elif what == "remove":
            events.append(("remove", f"r{draw(st.integers(0, n_rules))}"))
        else:
            events.append(("checkpoint", None))
    return events


def _key(f: RuleFired) -> tuple[str, int, float, float | None, float | None, float | None]:
    return (f.rule.id, f.fired_at, f.price, f.fill_price, f.volume, f.average)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_indexed_book_equals_a_naive_loop(events: list[tuple[str, object]]) -> None:
    book, naive = RuleBook(), Naive()
    checkpoints = 0
    for what, arg in events:
        if what == "put":
            assert isinstance(arg, Rule)
            book.put(RuleRecord(rule=arg))
            naive.put(arg)
        elif what == "remove":
            assert isinstance(arg, str)
            book.remove(arg)
            naive.remove(arg)
        elif what == "checkpoint":
            restored = RuleBook()
            restored.restore(book.snapshot())
            assert restored.rule_ids() == book.rule_ids()
            # go on with the restored book every other time, as after a restart; with the
            # same one otherwise, as the runner does after each checkpoint
            checkpoints += 1
            if checkpoints % 2:
                book = restored
        elif isinstance(arg, Tick):
            assert [_key(f) for f in book.on_tick(arg)] == [_key(f) for f in naive.on_tick(arg)]
        else:
            assert isinstance(arg, Candle)
            assert [_key(f) for f in book.on_candle(arg)] == [_key(f) for f in naive.on_candle(arg)]
        assert book.rule_ids() == set(naive.rules)


def test_long_random_walk_equals_the_naive_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of ticks: the history's lists are compacted on the way."""
    import random

    monkeypatch.setattr(rules_module, "_COMPACT_AT", 8)
    rnd = random.Random(3)
    book, naive = RuleBook(), Naive()
    price, n = 100.0, 0
    for i in range(3_000):
        if len(book) < 6:
            n += 1
            cond = PercentMove(
                percent=rnd.choice([0.5, 1.0, 2.0]),
                window_ms=rnd.choice([1_000, 5_000, 20_000]),
                direction=rnd.choice(["up", "down", "either"]),
            )
            r = rule(f"m{n}", cond, created_at=T0 + i * 50)
            book.put(RuleRecord(rule=r))
            naive.put(r)
        # a slow uptrend: the lows queue grows long before it is cut
        price *= 1 + rnd.uniform(-0.0008, 0.001)
        t = tick(price, T0 + i * 50 - rnd.choice([0, 0, 120]))
        assert [_key(f) for f in book.on_tick(t)] == [_key(f) for f in naive.on_tick(t)]
    assert n > 12  # rules did fire along the way


def test_history_lows_and_highs_equal_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    monkeypatch.setattr(rules_module, "_COMPACT_AT", 4)
    rnd = random.Random(5)
    history = rules_module._History()
    seen: list[tuple[int, float]] = []
    horizon, stamp = -(2**62), 0
    for _ in range(3_000):
        stamp += rnd.choice([0, 1, 10, 40])
        price = rnd.choice([1.0, 2.0, 3.0, 4.0, 5.0]) + stamp / 10_000
        keep = rnd.choice([100, 100, 100, 400])
        history.push(stamp, price, keep)
        seen.append((stamp, price))
        horizon = max(horizon, stamp - keep)
        for window in (1, 50, 100, 400):
            since = max(stamp - window, horizon)
            prices = [p for s, p in seen if s >= since]
            i = bisect_left(history.low_stamps, stamp - window, history.low_head)
            j = bisect_left(history.high_stamps, stamp - window, history.high_head)
            assert (history.lows[i], history.highs[j]) == (min(prices), max(prices))
        seen = [(s, p) for s, p in seen if s >= horizon]
