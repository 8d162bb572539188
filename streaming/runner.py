"""The local stream runner: Kafka ``market.ticks`` → candles, on aiokafka.

* Reads ``market.ticks`` in a consumer group, folds ticks with a
  :class:`~streaming.pipeline.TickPipeline`.
* Publishes open-candle updates (coalesced, at most every
  ``live_update_interval_ms``) and every closed candle to the relay fanout on
  ``{ticker}|ohlc:{tf}``; closed candles also go to Kafka ``market.candles``.
* With the platform's keys, evaluates people's market rules (:mod:`streaming.rule_io`);
  each fired rule also goes live to the fanout sealed on ``RULE:{tag}``
  (:mod:`dexorder.rule_sealing`): the fanout is one for everyone, so neither the person
  nor the rule is there in clear, and only platform parts holding ``relay.rule_seal_key``
  read it.
* Every ``checkpoint_interval_ms`` (:class:`streaming.checkpoint.Checkpointer`):
  waits until Kafka acknowledged the closed candles, writes the checkpoint
  (state + offsets), then commits the offsets.
  On start it restores the checkpoint, seeks to its offsets, and marks the
  closed candles found in ``market.candles`` after the checkpoint as already
  emitted, so a crash at any point loses none and repeats none.
* Every tick is validated before it is folded, every candle before it goes
  out (:mod:`dexorder.market_validation`); bad ones are counted by reason
  (``stream_invalid_ticks_total``, ``stream_invalid_candles_total``, and
  ``invalid`` in ``/healthz``) and dropped.
* A partition whose next offset lies beyond its log end belongs to a topic that
  was created again (the embedded broker keeps topics in memory, so a restart
  empties them): it is read again from its beginning instead of waiting for
  offsets that will never come.

The local runner is meant to run as one instance per checkpoint folder; in the
cluster the Flink job takes its place.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog
import zmq
import zmq.asyncio
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from dexorder import kafka
from dexorder.health import CounterReading, PartCounters, StreamFeed
from dexorder.market_validation import DEFAULT_MAX_SKEW_MS, candle_problem
from dexorder.record_signing import RecordKeys, record_keys
from dexorder.relay_keys import RelayPublisher, connect_publisher, publisher
from dexorder.rule_sealing import RuleSealer, rule_sealer
from dexorder.schemas import Candle, InvalidMessage, decode_candle, encode
from dexorder.topics import MARKET_CANDLES, MARKET_TICKS, ohlc_topic
from streaming import checkpoint as ckpt
from streaming.offsets import rewind_recreated
from streaming.pipeline import TickPipeline
from streaming.rule_io import LiveRules

if TYPE_CHECKING:
    from dexorder.config import Settings

TICKS = Counter("stream_ticks_total", "Tick records read")
LATE = Gauge("stream_late_ticks", "Ticks dropped as later than the allowed lateness")
DUPLICATES = Gauge("stream_duplicate_ticks", "Ticks dropped as duplicates (same trade id)")
MALFORMED = Counter("stream_malformed_ticks_total", "Tick records that did not decode")
CLOSED = Counter("stream_closed_candles_total", "Closed candles emitted", ["timeframe"])
INVALID = Counter("stream_invalid_ticks_total", "Ticks dropped by the validation rules", ["reason"])
INVALID_CANDLES = Counter(
    "stream_invalid_candles_total", "Candles not published: failed validation", ["reason"]
)
RESETS = Counter(
    "stream_offset_resets_total",
    "Partitions read again from the beginning: the topic was created again",
    ["topic"],
)
#: seconds; fine below 20 ms, the live path's target
READ_AGE_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
)
#: The Kafka hop of the live path, where most of its latency is (README, benchmark (c)):
#: a slow or overloaded broker shows here first. The oldest record of each partition's
#: batch stands for the batch; its time is the producer's (the ingestor's append), so
#: across hosts the clocks' skew is in it too.
READ_AGE = Histogram(
    "stream_tick_read_age_seconds",
    "Age of a tick record when the runner reads it: its Kafka create time to the read "
    "(the oldest record of each partition's batch)",
    buckets=READ_AGE_BUCKETS,
)

log = structlog.get_logger(part="stream")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class StreamRunner:
    """Runs until :meth:`stop`; ``state_dir`` holds the checkpoint."""

    bootstrap: kafka.Bootstrap
    relay_xsub: RelayPublisher | str  # the part's CURVE keys (a bare address: no relay)
    state_dir: Path
    group_id: str = "dexorder-stream"
    allowed_lateness_ms: int = 2_000
    live_update_interval_ms: int = 0
    checkpoint_interval_ms: int = 1_000
    fetch_max_wait_ms: int = 5
    #: how far beyond the wall clock a tick's or candle's time may be
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    #: figures for ``/healthz`` (ticks read, closed candles, …), counted from construction
    counters: PartCounters = field(
        default_factory=lambda: PartCounters(
            {
                "ticks": TICKS,
                "closed": CLOSED,
                "invalid_candles": INVALID_CANDLES,
                "offset_resets": CounterReading(RESETS, {"topic": MARKET_TICKS}),
            }
        )
    )
    #: the platform's record keys: with them the runner evaluates people's market rules
    #: (``market.rules``) and signs what they become; None: no rules (benchmarks)
    record_keys: RecordKeys | None = None
    #: seals fired rules for the relay; None: they go to Kafka only, never to the relay
    rule_sealer: RuleSealer | None = None
    ready: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _pipeline: TickPipeline | None = None
    _live: LiveRules | None = None
    _started_ms: int = 0

    @classmethod
    def from_config(cls, cfg: Settings) -> StreamRunner:
        """The runner of the ``stream`` section, publishing with the part's relay keys."""
        s = cfg.stream
        return cls(
            bootstrap=cfg.kafka.connection(),
            relay_xsub=publisher(cfg, "stream"),
            state_dir=cfg.state_dir("stream"),
            group_id=s.group_id,
            allowed_lateness_ms=s.allowed_lateness_ms,
            live_update_interval_ms=s.live_update_interval_ms,
            checkpoint_interval_ms=s.checkpoint_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_skew_ms=cfg.market_data.max_clock_skew_ms,
            record_keys=record_keys(cfg),
            rule_sealer=rule_sealer(cfg),
        )

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, object]:
        """``/healthz`` details: the counters, drops by reason, and the feed (see
        :class:`dexorder.health.StreamFeed`)."""
        pipeline = self._pipeline or TickPipeline(self.allowed_lateness_ms, self.max_skew_ms)
        feed = StreamFeed(
            started_ms=self._started_ms,
            last_tick_ms={
                k: b.seen_at for k, b in list(pipeline.book.tickers.items()) if b.seen_at
            },
        )
        return {
            **self.counters,
            # the folding state's own counts (one pipeline per runner)
            "late": pipeline.book.late,
            "duplicates": pipeline.book.duplicates,
            "malformed": pipeline.malformed,
            "invalid": sum(pipeline.invalid.values()),
            "invalid_reasons": dict(pipeline.invalid),
            "feed": msgspec.to_builtins(feed),
            # people's market rules: active now, and topic records dropped by reason
            "rules": len(self._live.book) if self._live else 0,
            "rule_records_dropped": self._live.dropped if self._live else {},
        }

    @property
    def checkpoint_path(self) -> Path:
        return self.state_dir / "checkpoint.msgpack"

    async def run(self) -> None:
        live = None if self.record_keys is None else LiveRules(self.bootstrap, self.record_keys)
        self._live = live
        pipeline = self._pipeline = TickPipeline(
            self.allowed_lateness_ms, self.max_skew_ms, rules=live.book if live else None
        )
        self._started_ms = _now_ms()
        saved = ckpt.load(self.checkpoint_path)
        checkpoints = ckpt.Checkpointer(
            self.checkpoint_path,
            pipeline.book.snapshot,
            self.checkpoint_interval_ms,
            last_ms=self._started_ms,
            rules_snapshot=live.book.snapshot if live else None,
        )
        if saved is not None:
            pipeline.book.restore(saved.book)
            checkpoints.candle_offsets = dict(saved.candle_offsets)
            log.info("restored checkpoint", partitions=saved.tick_offsets)
            mended = pipeline.book.forget_future(_now_ms(), self.max_skew_ms)
            if mended:
                log.warning("dropped future-dated state from the checkpoint", tickers=mended)
        producer = kafka.producer(self.bootstrap, linger_ms=5, acks="all", enable_idempotence=False)
        await producer.start()
        await self._recover_emitted(pipeline, checkpoints.candle_offsets)
        if live is not None:
            await live.start(producer, saved.rules if saved is not None else b"")
        consumer = kafka.consumer(
            self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        runner = self

        class Seek(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                if revoked:
                    await checkpoints.take(consumer)

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                for tp in assigned:
                    # where this runner got to; on its first assignment, the checkpoint
                    off = checkpoints.tick_offsets.get(tp.partition)
                    if off is None and saved is not None:
                        off = saved.tick_offsets.get(tp.partition)
                    if off is not None:
                        consumer.seek(tp, off)
                runner.ready = True
                log.info("assigned", partitions=sorted(tp.partition for tp in assigned))

        consumer.subscribe([MARKET_TICKS], listener=Seek())
        await consumer.start()
        pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 100_000)
        connect_publisher(pub, self.relay_xsub)
        touched: set[str] = set()
        last_live = _now_ms()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = _now_ms()
                closed: list[Candle] = []
                for tp, records in batch.items():
                    result = pipeline.feed((r.value for r in records if r.value is not None), now)
                    checkpoints.read_to(tp.partition, records[-1].offset + 1)
                    closed.extend(result.closed)
                    touched |= result.touched
                    TICKS.inc(len(records))
                    READ_AGE.observe(max(0, now - records[0].timestamp) / 1000)
                    if result.malformed:
                        MALFORMED.inc(result.malformed)
                        log.warning("malformed tick records", count=result.malformed)
                    if result.invalid:
                        for reason, n in result.invalid.items():
                            INVALID.labels(reason).inc(n)
                        log.warning("invalid ticks dropped", reasons=result.invalid)
                for r in await rewind_recreated(consumer, log, RESETS):
                    checkpoints.read_to(r.tp.partition, r.start)
                if await self._caught_up(consumer):
                    closed.extend(pipeline.idle(now))
                for candle in self._valid_candles(closed, now):
                    data = encode(candle)
                    checkpoints.sent(
                        await producer.send(MARKET_CANDLES, data, key=candle.ticker.encode())
                    )
                    await pub.send_multipart(
                        [ohlc_topic(candle.ticker, candle.timeframe).encode(), data]
                    )
                    CLOSED.labels(candle.timeframe).inc()
                if live is not None and pipeline.fired:
                    fired = pipeline.take_fired()
                    checkpoints.wrote(live.fire(fired))
                    if self.rule_sealer is not None:
                        for f in fired:
                            topic, sealed = self.rule_sealer.seal(f)
                            await pub.send_multipart([topic.encode(), sealed])
                if touched and now - last_live >= self.live_update_interval_ms:
                    for ticker in touched:
                        for candle in self._valid_candles(pipeline.book.open_candles(ticker), now):
                            await pub.send_multipart(
                                [ohlc_topic(ticker, candle.timeframe).encode(), encode(candle)]
                            )
                    touched.clear()
                    last_live = now
                LATE.set(pipeline.book.late)
                DUPLICATES.set(pipeline.book.duplicates)
                await checkpoints.maybe_take(consumer, now)
        finally:
            self.ready = False
            try:
                await checkpoints.take(consumer)
            finally:
                if live is not None:
                    await live.stop()
                pub.close()
                await consumer.stop()
                await producer.stop()

    def _valid_candles(self, candles: list[Candle], now: int) -> list[Candle]:
        """``candles`` without those failing validation (a huge volume can still sum to inf)."""
        out = []
        for candle in candles:
            problem = candle_problem(candle, now, self.max_skew_ms)
            if problem is None:
                out.append(candle)
            else:
                INVALID_CANDLES.labels(problem).inc()
                log.warning("invalid candle not published", ticker=candle.ticker, reason=problem)
        return out

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer) -> bool:
        """Whether every assigned partition has been read to its end."""
        assignment = consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            high = consumer.highwater(tp)
            if high is None or await consumer.position(tp) < high:
                return False
        return True

    async def _recover_emitted(
        self, pipeline: TickPipeline, candle_offsets: dict[int, int]
    ) -> None:
        """Mark closed candles emitted after the checkpoint so they are not emitted again."""
        if not pipeline.book.tickers:
            return  # a fresh start: nothing of ours can be there yet
        reader = kafka.consumer(self.bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            parts = reader.partitions_for_topic(MARKET_CANDLES) or set()
            tps = [TopicPartition(MARKET_CANDLES, p) for p in parts]
            if not tps:
                return
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            for tp in tps:
                if candle_offsets.get(tp.partition, 0) > ends[tp]:
                    # beyond the log end: the topic was created again since the checkpoint
                    log.warning("market.candles created again; reading it from the start")
                    candle_offsets[tp.partition] = 0
            remaining = {tp for tp in tps if candle_offsets.get(tp.partition, 0) < ends[tp]}
            for tp in tps:
                reader.seek(tp, candle_offsets.get(tp.partition, 0))
            marked = 0
            while remaining:
                batch = await reader.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for r in records:
                        try:
                            c = decode_candle(r.value or b"")
                        except InvalidMessage:
                            continue
                        if c.ticker in pipeline.book.tickers:
                            pipeline.book.mark_emitted(c.ticker, c.timeframe, c.open_time)
                            marked += 1
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            log.info("recovered emitted candles after checkpoint", candles=marked)
        finally:
            await reader.stop()
