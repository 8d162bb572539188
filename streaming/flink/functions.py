"""The job's Python functions (PyFlink operators), in a module of their own so that Flink
pickles them by reference and the workers import this module (a class pickled from
``__main__`` would carry its module's globals by value)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from dexorder.market_validation import tick_problem
from dexorder.schemas import InvalidMessage, Tick, decode_candle, decode_tick, encode
from streaming.flink.config import JobConfig
from streaming.flink.keyed import END_OF_INPUT, KeyState, TickerFold
from streaming.flink.relay import RelayPublisher

# PyFlink exists only in .venv-flink; the pure modules above import without it.
from pyflink.common import Row, Types  # isort: skip
from pyflink.datastream import (  # isort: skip
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    TimeDomain,
)
from pyflink.datastream.state import ValueStateDescriptor  # isort: skip

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
KEYED_TICK = Types.TUPLE([Types.STRING(), BYTES])
LIVE = OutputTag("live", BYTES)

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


class FoldTicks(KeyedProcessFunction):  # type: ignore[misc]
    """One ticker's candles in Flink keyed state; closed candles out, live updates aside."""

    def __init__(self, cfg: JobConfig) -> None:
        self._lateness = cfg.allowed_lateness_ms
        self._idle_ms = cfg.idle_close_ms
        self._live_ms = cfg.live_update_interval_ms
        self._live = cfg.relay is not None

    def open(self, runtime_context: RuntimeContext) -> None:
        # The state holds the Python object: PyFlink's state cache keeps it between ticks and
        # pickles it when it flushes (bundle end, checkpoint), not on every tick.
        self._state = runtime_context.get_state(
            ValueStateDescriptor("ticker", Types.PICKLED_BYTE_ARRAY())
        )
        self._fold = TickerFold(self._lateness)
        metrics = runtime_context.get_metrics_group()
        self._late = metrics.counter("late_ticks")
        self._duplicates = metrics.counter("duplicate_ticks")
        self._closed = metrics.counter("closed_candles")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        tick = decode_tick(bytes(value[1]))
        state: KeyState | None = self._state.value()
        timers = ctx.timer_service()
        if state is None:
            state = self._fold.new_state(tick)
            timers.register_event_time_timer(END_OF_INPUT)
        now = timers.current_processing_time()
        folded = self._fold.on_tick(state, tick, now)
        if folded.late:
            self._late.inc()
        elif folded.duplicate:
            self._duplicates.inc()
        yield from self._out(folded.closed)
        if folded.accepted and self._live:
            if now - state.live_at >= self._live_ms:
                yield from self._live_updates(state, now)
            else:
                state.live_owed = True
        self._schedule(state, timers, now)
        self._state.update(state)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        state: KeyState | None = self._state.value()
        if state is None:
            return
        if ctx.time_domain() == TimeDomain.EVENT_TIME:
            # the final watermark of a bounded input: close everything
            yield from self._out(self._fold.on_end(state))
            if state.live_owed:
                yield from self._live_updates(state, timestamp)
            self._state.update(state)
            return
        now = ctx.timer_service().current_processing_time()
        state.timer_at = 0
        if self._idle_ms:
            yield from self._out(self._fold.on_idle(state, now))
        if state.live_owed and now - state.live_at >= self._live_ms:
            yield from self._live_updates(state, now)
        self._schedule(state, ctx.timer_service(), now)
        self._state.update(state)

    def _out(self, closed: list[Any]) -> Iterator[bytes]:
        for candle in closed:
            self._closed.inc()
            yield encode(candle)

    def _live_updates(self, state: KeyState, now: int) -> Iterator[Any]:
        state.live_at = now
        state.live_owed = False
        for candle in self._fold.open_candles(state):
            yield LIVE, encode(candle)

    def _schedule(self, state: KeyState, timers: Any, now: int) -> None:
        """One pending processing-time timer per ticker, for an owed live update or an
        idle close, whichever is due first."""
        due = []
        if state.live_owed:
            due.append(state.live_at + self._live_ms)
        if self._idle_ms and state.book.minutes:
            due.append(now + self._idle_ms)
        if due and not state.timer_at:
            state.timer_at = max(min(due), now + 1)
            timers.register_processing_time_timer(state.timer_at)


class PublishToRelay(ProcessFunction):  # type: ignore[misc]
    """Sends each candle (closed or live) to the relay's XSUB; emits nothing."""

    def __init__(self, cfg: JobConfig) -> None:
        assert cfg.relay is not None
        self._cfg = cfg.relay

    def open(self, runtime_context: RuntimeContext) -> None:
        self._pub = RelayPublisher(self._cfg)
        self._pub.wait_subscribed()

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        self._pub.candle(decode_candle(bytes(value)))
        return iter(())

    def close(self) -> None:
        self._pub.close()


def candle_json(data: Any) -> str:
    return msgspec.json.encode(decode_candle(bytes(data))).decode()
