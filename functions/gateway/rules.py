"""People's market rules as the gateway holds them: a view of ``market.rules``, and the
writes agents ask for.

Agents cannot reach Kafka in the cluster (network policy), so a person's agent registers
and removes its rules (price alerts, resting paper orders) through the gateway
(``/internal/rules``, :mod:`gateway.api.rules`). The gateway produces each rule to the
compacted topic ``market.rules`` (keyed by rule id, signed like every platform record;
a tombstone deletes) and keeps a view of the whole topic, read from its beginning and
followed, indexed by person. The view is what enforces the per-person limits, answers an
agent's "my rules" (fired ones included: the stream engine writes a rule back with its
fired state) and finds a leaving person's rules to tombstone (``DELETE /api/me``).

:class:`RuleView` is the pure part (records in, answers out); :class:`RuleStore` does
the Kafka I/O around it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from dexorder import kafka
from dexorder.contracts.rules import (
    BadRule,
    OrderTrigger,
    Rule,
    RuleRecord,
    decode_record,
    encode_record,
)
from dexorder.kafka import ensure_topics
from dexorder.record_signing import RecordKeys, signed_record
from dexorder.topics import KAFKA_TOPICS, MARKET_RULES

log = structlog.get_logger(part="gateway")


class RuleRefused(Exception):
    """A rule write the gateway turns down; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class RuleLimits:
    """How many rules one person may have: active (not fired) alerts, open orders, and
    all rules kept (fired ones stay until deleted, so they count too)."""

    alerts: int = 100
    orders: int = 100
    total: int = 300


class RuleView:
    """Every rule of ``market.rules``, by id and by person. Pure state."""

    def __init__(self) -> None:
        self._records: dict[str, RuleRecord] = {}
        self._by_user: dict[str, set[str]] = {}
        #: records of the topic that are not rules (skipped, counted)
        self.unreadable = 0

    def apply(self, rule_id: str, value: bytes | None) -> None:
        """One record of the topic: a rule (new, or written back fired) or a tombstone."""
        if value is None:
            self.remove(rule_id)
            return
        try:
            record = decode_record(value)
        except BadRule as exc:
            self.unreadable += 1
            log.warning("unreadable market rule skipped", rule_id=rule_id, reason=str(exc))
            return
        if record.rule.id != rule_id:
            self.unreadable += 1
            log.warning("market rule under another key skipped", key=rule_id)
            return
        self.keep(record)

    def keep(self, record: RuleRecord) -> None:
        rule = record.rule
        old = self._records.get(rule.id)
        if old is not None and old.rule.user != rule.user:
            self._by_user.get(old.rule.user, set()).discard(rule.id)
        self._records[rule.id] = record
        self._by_user.setdefault(rule.user, set()).add(rule.id)

    def remove(self, rule_id: str) -> RuleRecord | None:
        record = self._records.pop(rule_id, None)
        if record is not None:
            ids = self._by_user.get(record.rule.user, set())
            ids.discard(rule_id)
            if not ids:
                self._by_user.pop(record.rule.user, None)
        return record

    def get(self, rule_id: str) -> RuleRecord | None:
        return self._records.get(rule_id)

    def of(self, user: str) -> list[RuleRecord]:
        """``user``'s rules, oldest first."""
        records = [self._records[i] for i in self._by_user.get(user, ())]
        return sorted(records, key=lambda r: (r.rule.created_at, r.rule.id))

    def __len__(self) -> int:
        return len(self._records)

    def users(self) -> list[str]:
        return sorted(self._by_user)

    def active_tickers(self) -> set[str]:
        """The tickers some rule not yet fired watches."""
        return {r.rule.ticker for r in self._records.values() if r.fired is None}

    def admit(self, rule: Rule, limits: RuleLimits) -> RuleRecord | None:
        """Whether ``rule`` may be put: the record it already is (a repeated put: nothing to
        write), None (a new rule within the limits), or :class:`RuleRefused`."""
        old = self._records.get(rule.id)
        if old is not None:
            if old.rule.user != rule.user:
                raise RuleRefused(409, f"rule id {rule.id!r} is taken; choose another")
            if old.rule == rule:
                return old  # an agent retrying: the rule stays as it is (fired or not)
            raise RuleRefused(409, f"rule {rule.id!r} exists with other terms; delete it first")
        mine = self.of(rule.user)
        if len(mine) >= limits.total:
            raise RuleRefused(
                409,
                f"at most {limits.total} rules kept per person; delete some (triggered "
                "alerts count until they are deleted)",
            )
        is_order = isinstance(rule.condition, OrderTrigger)
        active = [r for r in mine if r.fired is None and isinstance(r.rule.condition, OrderTrigger)]
        if not is_order:
            active = [
                r
                for r in mine
                if r.fired is None and not isinstance(r.rule.condition, OrderTrigger)
            ]
        limit = limits.orders if is_order else limits.alerts
        if len(active) >= limit:
            what = "resting orders" if is_order else "active alerts"
            raise RuleRefused(409, f"at most {limit} {what} per person; remove some first")
        return None


#: Asks the market data path to stream a ticker (the relay's realtime request).
AskStream = Callable[[str], Awaitable[None]]


class RuleStore:
    """The view of ``market.rules`` kept current, and the writes to it.

    ``ask_stream``: a rule watches a ticker only if its ticks flow, and ingestors stream
    their configured symbols and what someone asked for (until they restart). So the store
    asks for each new rule's ticker, and every ``restream_every_s`` for all tickers of
    rules not yet fired (an agent used to ask, watching them itself)."""

    def __init__(
        self,
        bootstrap: kafka.Bootstrap,
        keys: RecordKeys,
        limits: RuleLimits | None = None,
        ready_timeout_s: float = 10.0,
        ask_stream: AskStream | None = None,
        restream_every_s: float = 60.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.keys = keys
        self.limits = limits or RuleLimits()
        self.ready_timeout_s = ready_timeout_s
        self.ask_stream = ask_stream
        self.restream_every_s = restream_every_s
        self._asking: set[asyncio.Task[None]] = set()
        self.view = RuleView()
        #: set once the view holds everything the topic held when the store started
        self.ready = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._streaming: asyncio.Task[None] | None = None
        #: per partition, the offset after the last record read (across reconnections)
        self._read_up_to: dict[int, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and read the topic in the background (the gateway serves meanwhile;
        rule calls wait for the view, and answer 503 if it is not there in time)."""
        self._task = asyncio.create_task(self._run())
        self._streaming = asyncio.create_task(self._keep_streamed())

    async def close(self) -> None:
        for task in [self._task, self._streaming, *self._asking]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except (KafkaError, OSError) as exc:
                log.warning("market rules: Kafka unavailable; trying again", error=str(exc))
                await asyncio.sleep(1.0)
            except Exception:  # never leave the gateway without its view for good
                log.exception("market rules: following the topic failed; trying again")
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        await ensure_topics(self.bootstrap, {MARKET_RULES: KAFKA_TOPICS[MARKET_RULES]})
        if self._producer is None:
            producer = kafka.producer(self.bootstrap, acks="all")
            await producer.start()
            self._producer = producer
        consumer = kafka.consumer(self.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            await consumer.topics()  # fresh metadata: the topic may be new
            partitions = [
                TopicPartition(MARKET_RULES, p)
                for p in sorted(consumer.partitions_for_topic(MARKET_RULES) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            # a log shorter than what this store read before was made again, empty (the
            # embedded broker restarted): the rules this view holds go back into it
            lost = any(ends[tp] < self._read_up_to.get(tp.partition, 0) for tp in partitions)
            while True:
                if await _caught_up(consumer, ends):
                    if not self.ready.is_set():
                        log.info("market rules read", rules=len(self.view))
                        self.ready.set()
                    if lost:
                        await self._restore()
                        lost = False
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                for tp, records in batches.items():
                    for record in records:
                        self._read_up_to[tp.partition] = record.offset + 1
                        if record.key is None:
                            continue
                        self.view.apply(record.key.decode(errors="replace"), record.value)
                if await _beyond_end(consumer):
                    # only a log made again (empty) ends before where this one read to
                    await consumer.seek_to_beginning(*partitions)
                    ends = await consumer.end_offsets(partitions)
                    lost = True
        finally:
            await consumer.stop()

    async def _restore(self) -> None:
        """Write every rule of the view to the topic again (it lost them)."""
        assert self._producer is not None
        records = [r for user in list(self.view.users()) for r in self.view.of(user)]
        log.warning(
            "market.rules was made again, empty: writing its rules back", rules=len(records)
        )
        self._read_up_to.clear()
        for record in records:
            value = encode_record(record)
            await self._producer.send_and_wait(
                MARKET_RULES,
                value,
                key=record.rule.id.encode(),
                headers=signed_record(self.keys, MARKET_RULES, value),
            )

    async def _keep_streamed(self) -> None:
        await self.ready.wait()
        while True:
            for ticker in sorted(self.view.active_tickers()):
                await self._ask(ticker)
            await asyncio.sleep(self.restream_every_s)

    async def _ask(self, ticker: str) -> None:
        if self.ask_stream is None:
            return
        try:
            await self.ask_stream(ticker)
        except Exception as exc:  # the relay away: asked again on the next round
            log.warning(
                "could not ask for a rule's ticker to be streamed",
                ticker=ticker,
                error=str(exc)[:200],
            )

    def _ask_soon(self, ticker: str) -> None:
        task = asyncio.create_task(self._ask(ticker))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _wait_ready(self) -> AIOKafkaProducer:
        try:
            await asyncio.wait_for(self.ready.wait(), self.ready_timeout_s)
        except TimeoutError:
            raise RuleRefused(503, "market rules are not available right now; try again") from None
        assert self._producer is not None
        return self._producer

    # --- writes --------------------------------------------------------------------------

    async def _produce(self, rule_id: str, value: bytes | None) -> None:
        producer = await self._wait_ready()
        headers = signed_record(self.keys, MARKET_RULES, value or b"")
        try:
            await producer.send_and_wait(MARKET_RULES, value, key=rule_id.encode(), headers=headers)
        except KafkaError as exc:
            raise RuleRefused(503, f"market rules cannot be written right now: {exc}") from None

    async def put(self, rule: Rule) -> tuple[RuleRecord, bool]:
        """Register ``rule`` (checked): the record, and whether it is new (the same rule
        again is no new write)."""
        await self._wait_ready()
        async with self._locks.setdefault(rule.user, asyncio.Lock()):
            existing = self.view.admit(rule, self.limits)
            if existing is not None:
                return existing, False
            record = RuleRecord(rule=rule)
            await self._produce(rule.id, encode_record(record))
            self.view.keep(record)  # read your writes (the follower sets it again)
            self._ask_soon(rule.ticker)
            return record, True

    async def delete(self, user: str, rule_id: str, unless_fired: bool = False) -> RuleRecord:
        """Remove ``user``'s rule ``rule_id``; :class:`RuleRefused` 404 if they have none,
        403 if it is another person's, 409 when ``unless_fired`` and it has fired."""
        await self._wait_ready()
        async with self._locks.setdefault(user, asyncio.Lock()):
            record = self.view.get(rule_id)
            if record is None:
                raise RuleRefused(404, f"no rule {rule_id!r}")
            if record.rule.user != user:
                raise RuleRefused(403, f"rule {rule_id!r} is not yours")
            if unless_fired and record.fired is not None:
                raise RuleRefused(409, f"rule {rule_id!r} has already fired")
            await self._produce(rule_id, None)
            self.view.remove(rule_id)
            return record

    async def rules_of(self, user: str) -> list[RuleRecord]:
        await self._wait_ready()
        return self.view.of(user)

    async def forget(self, user: str) -> int:
        """Tombstone every rule of ``user`` (their account is being deleted)."""
        await self._wait_ready()
        async with self._locks.setdefault(user, asyncio.Lock()):
            records = self.view.of(user)
            for record in records:
                await self._produce(record.rule.id, None)
                self.view.remove(record.rule.id)
        self._locks.pop(user, None)
        return len(records)


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _beyond_end(consumer: AIOKafkaConsumer) -> bool:
    """Whether a partition's position is beyond the log end of its latest fetch."""
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is not None and await consumer.position(tp) > high:
            return True
    return False
