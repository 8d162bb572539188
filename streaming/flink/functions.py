"""The job's Python functions (PyFlink operators), in a module of their own so that Flink
pickles them by reference and the workers import this module (a class pickled from
``__main__`` would carry its module's globals by value)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import msgspec

from dexorder.contracts.rules import (
    Rule,
    decode_fired,
    decode_record,
    encode_fired,
)
from dexorder.market_validation import candle_problem, tick_problem
from dexorder.rule_sealing import RuleSealer
from dexorder.schemas import Candle, InvalidMessage, Tick, decode_candle, decode_tick, encode
from dexorder.topics import ohlc_topic
from streaming.flink.config import JobConfig, KafkaIO
from streaming.flink.keyed import END_OF_INPUT, Folded, KeyState, TickerFold, route_rule
from streaming.flink.records import fired_records, job_record_keys, rule_record_problem
from streaming.flink.relay import RelayPublisher, job_sealer

# PyFlink exists only in .venv-flink; the pure modules above import without it.
from pyflink.common import Row, Types  # isort: skip
from pyflink.datastream import (  # isort: skip
    FlatMapFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    MapFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    TimeDomain,
)
from pyflink.datastream.state import ValueStateDescriptor  # isort: skip

#: the workers' log lines reach the task manager's log (the benchmark reads two of them)
log = logging.getLogger("dexorder.flink")
FIRST_TICK = "first tick folded"
INPUT_ENDED = "input ended"

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
#: (ticker, MessagePack tick)
KEYED_TICK = Types.TUPLE([Types.STRING(), BYTES])
#: (ticker, rule id, RuleRecord JSON; empty: the rule was deleted)
RULE_CHANGE = Types.TUPLE([Types.STRING(), Types.STRING(), BYTES])
#: (relay topic, message) for the relay publisher
RELAY_MESSAGE = Types.TUPLE([Types.STRING(), BYTES])
#: open-candle updates, as relay messages
LIVE = OutputTag("live", RELAY_MESSAGE)
#: fired rules (RuleFired JSON)
FIRED = OutputTag("fired", BYTES)

_tick_json = msgspec.json.Decoder(Tick)


class DecodeTicks(ProcessFunction):  # type: ignore[misc]
    """Raw records → (ticker, MessagePack tick), validated; malformed and invalid ones are
    counted (Flink metrics ``malformed_ticks``, ``invalid_ticks_<reason>``) and dropped."""

    def __init__(self, fmt: str, max_skew_ms: int) -> None:
        self._fmt = fmt
        self._max_skew_ms = max_skew_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._metrics = runtime_context.get_metrics_group()
        self._malformed = self._metrics.counter("malformed_ticks")
        self._invalid: dict[str, Any] = {}

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        try:
            if self._fmt == "json":
                tick = _tick_json.decode(value)
                data = encode(tick)
            else:
                data = bytes(value[0]) if isinstance(value, Row) else bytes(value)
                tick = decode_tick(data)
        except (InvalidMessage, msgspec.DecodeError, msgspec.ValidationError):
            self._malformed.inc()
            return
        problem = tick_problem(
            tick, ctx.timer_service().current_processing_time(), self._max_skew_ms
        )
        if problem is not None:
            counter = self._invalid.get(problem)
            if counter is None:
                counter = self._invalid[problem] = self._metrics.counter(f"invalid_ticks_{problem}")
            counter.inc()
            return
        yield tick.ticker, data


class RuleTable(KeyedProcessFunction):  # type: ignore[misc]
    """``market.rules`` (key, value, headers) keyed by rule id → changes keyed by ticker.

    Only a record with the platform's signature counts (:mod:`streaming.flink.records`). A
    tombstone carries no ticker, so this stage remembers each rule's ticker (keyed state)
    to route the deletion, and a rule moved to another ticker is deleted on the old one.
    A record that is not a signed rule is counted (``bad_rules``), logged and dropped."""

    def __init__(self, cfg: KafkaIO) -> None:
        self._cfg = cfg

    def open(self, runtime_context: RuntimeContext) -> None:
        self._ticker = runtime_context.get_state(ValueStateDescriptor("ticker", Types.STRING()))
        self._bad = runtime_context.get_metrics_group().counter("bad_rules")
        self._keys = job_record_keys(self._cfg.record_key_file)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        data = None if value[1] is None else bytes(value[1])
        headers = {k: bytes(v) for k, v in (value[2] or {}).items()}
        problem = rule_record_problem(self._keys, data, headers, self._cfg.rules_topic)
        if problem is not None:
            self._bad.inc()
            log.warning("market.rules record dropped: %s", problem)
            return
        routed = route_rule(ctx.get_current_key(), self._ticker.value(), data)
        if routed.bad:
            self._bad.inc()
        elif routed.ticker is None:
            self._ticker.clear()
        else:
            self._ticker.update(routed.ticker)
        yield from routed.changes


class FoldTicks(KeyedCoProcessFunction):  # type: ignore[misc]
    """One ticker's candles and rules in Flink keyed state. Input 1: ticks; input 2: rule
    changes. Main output: closed candles (MessagePack); side outputs: live updates (LIVE)
    and fired rules (FIRED)."""

    def __init__(self, cfg: JobConfig, initial_rules: dict[str, list[Rule]]) -> None:
        self._lateness = cfg.allowed_lateness_ms
        self._idle_ms = cfg.idle_close_ms
        self._live_ms = cfg.live_update_interval_ms
        self._live = cfg.relay is not None
        self._max_skew_ms = cfg.max_skew_ms
        self._initial = initial_rules

    def open(self, runtime_context: RuntimeContext) -> None:
        # The state holds the Python object: PyFlink's state cache keeps it between ticks and
        # pickles it (as MessagePack, KeyState.__reduce__) when it flushes: a bundle's end,
        # a checkpoint; not on every tick.
        self._state = runtime_context.get_state(
            ValueStateDescriptor("ticker", Types.PICKLED_BYTE_ARRAY())
        )
        self._fold = TickerFold(self._lateness, self._initial)
        metrics = self._metrics = runtime_context.get_metrics_group()
        self._invalid: dict[str, Any] = {}
        self._late = metrics.counter("late_ticks")
        self._duplicates = metrics.counter("duplicate_ticks")
        self._closed = metrics.counter("closed_candles")
        self._fired = metrics.counter("fired_rules")
        self._ticks = 0
        self._ended = False

    def _state_of(self, ctx: Any) -> KeyState:
        state: KeyState | None = self._state.value()
        if state is None:
            state = self._fold.new_state(ctx.get_current_key())
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        return state

    def process_element1(self, value: Any, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        tick = decode_tick(bytes(value[1]))
        if not self._ticks:
            log.info(FIRST_TICK)
        self._ticks += 1
        state = self._state_of(ctx)
        timers = ctx.timer_service()
        now = timers.current_processing_time()
        folded = self._fold.on_tick(state, tick, now)
        if folded.late:
            self._late.inc()
        elif folded.duplicate:
            self._duplicates.inc()
        yield from self._out(folded, now)
        if folded.accepted and self._live:
            if now - state.live_at >= self._live_ms:
                yield from self._live_updates(state, now)
            else:
                state.live_owed = True
        self._schedule(state, timers, now)
        self._state.update(state)

    def process_element2(self, value: Any, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        _, rule_id, data = value
        state = self._state_of(ctx)
        record = decode_record(bytes(data)) if data else None
        self._fold.on_rule(state, record, rule_id)
        self._state.update(state)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedCoProcessFunction.OnTimerContext) -> Iterator[Any]:
        state: KeyState | None = self._state.value()
        if state is None:
            return
        if ctx.time_domain() == TimeDomain.EVENT_TIME:
            # the final watermark of a bounded input: close everything
            if not self._ended:
                self._ended = True
                log.info("%s: %d ticks folded", INPUT_ENDED, self._ticks)
            now = ctx.timer_service().current_processing_time()
            yield from self._out(self._fold.on_end(state), now)
            state.live_owed = False  # nothing is open any more
            self._state.update(state)
            return
        now = ctx.timer_service().current_processing_time()
        state.timer_at = 0
        if self._idle_ms:
            yield from self._out(self._fold.on_idle(state, now), now)
        if state.live_owed and now - state.live_at >= self._live_ms:
            yield from self._live_updates(state, now)
        self._schedule(state, ctx.timer_service(), now)
        self._state.update(state)

    def _valid(self, candle: Candle, now: int) -> bool:
        """Whether ``candle`` may go out (:func:`candle_problem`, as the local runner checks:
        a huge volume can still sum to inf); a bad one is counted by reason and logged."""
        problem = candle_problem(candle, now, self._max_skew_ms)
        if problem is None:
            return True
        counter = self._invalid.get(problem)
        if counter is None:
            counter = self._invalid[problem] = self._metrics.counter(f"invalid_candles_{problem}")
        counter.inc()
        log.warning("invalid candle not published: %s %s", candle.ticker, problem)
        return False

    def _out(self, folded: Folded, now: int) -> Iterator[Any]:
        for candle in folded.closed:
            if self._valid(candle, now):
                self._closed.inc()
                yield encode(candle)
        for fired in folded.fired:
            self._fired.inc()
            yield FIRED, encode_fired(fired)

    def _live_updates(self, state: KeyState, now: int) -> Iterator[Any]:
        state.live_at = now
        state.live_owed = False
        for candle in self._fold.open_candles(state):
            if self._valid(candle, now):
                yield LIVE, (ohlc_topic(candle.ticker, candle.timeframe), encode(candle))

    def _schedule(self, state: KeyState, timers: Any, now: int) -> None:
        """One pending processing-time timer per ticker, for an owed live update or an
        idle close, whichever is due first."""
        due = []
        if state.live_owed:
            due.append(state.live_at + self._live_ms)
        if self._idle_ms and (state.book.minutes or any(state.book.rollups.values())):
            due.append(now + self._idle_ms)
        if due and not state.timer_at:
            state.timer_at = max(min(due), now + 1)
            timers.register_processing_time_timer(state.timer_at)


class PublishToRelay(ProcessFunction):  # type: ignore[misc]
    """Sends each (topic, message) to the relay's XSUB; emits nothing."""

    def __init__(self, cfg: JobConfig) -> None:
        assert cfg.relay is not None
        self._cfg = cfg.relay

    def open(self, runtime_context: RuntimeContext) -> None:
        self._pub = RelayPublisher(self._cfg)
        self._pub.wait_subscribed()

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        self._pub.send(value[0], bytes(value[1]))
        return iter(())

    def close(self) -> None:
        self._pub.close()


# -- small maps between the operators and the sinks ----------------------------------------


def candle_json(data: Any) -> str:
    """A closed candle (MessagePack) as a JSON line."""
    return msgspec.json.encode(decode_candle(bytes(data))).decode()


def candle_relay(data: Any) -> tuple[str, bytes]:
    candle = decode_candle(bytes(data))
    return ohlc_topic(candle.ticker, candle.timeframe), bytes(data)


class SealFired(MapFunction):  # type: ignore[misc]
    """A fired rule (its JSON) as the relay message of the person's live feed: sealed on
    ``RULE:{tag}`` (:mod:`dexorder.rule_sealing`). The secret is read from the job's key file
    when the task opens, so it never travels in the pickled job graph."""

    def __init__(self, cfg: JobConfig) -> None:
        assert cfg.relay is not None
        self._cfg = cfg.relay
        self._sealer: RuleSealer | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._sealer = job_sealer(self._cfg)

    def map(self, value: Any) -> tuple[str, bytes]:
        assert self._sealer is not None
        return self._sealer.seal(decode_fired(bytes(value)))


def fired_text(data: Any) -> str:
    return bytes(data).decode()


def candle_record(data: Any) -> Row:
    """``market.candles``: keyed by ticker, the candle's MessagePack."""
    return Row(decode_candle(bytes(data)).ticker.encode(), bytes(data))


class SignedFired(FlatMapFunction):  # type: ignore[misc]
    """A fired rule (its JSON) → its signed record for one topic (``notifications``,
    ``rules.fired``: orders only, or ``market.rules``) as a Row (k, v, headers). The signing
    key is read from ``kafka.record_key_file`` when the task opens."""

    def __init__(self, cfg: KafkaIO, topic: str) -> None:
        self._cfg = cfg
        self._topic = topic

    def open(self, runtime_context: RuntimeContext) -> None:
        self._keys = job_record_keys(self._cfg.record_key_file)

    def flat_map(self, value: Any) -> Iterator[Row]:
        k = self._cfg
        for record in fired_records(
            decode_fired(bytes(value)),
            self._keys,
            notifications=k.notifications_topic,
            rules_fired=k.fired_topic,
            rules=k.rules_topic,
        ):
            if record.topic == self._topic:
                yield Row(record.key, record.value, record.headers)
