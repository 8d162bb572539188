"""The local runner's market rules on Kafka: ``market.rules`` into a
:class:`~streaming.rules.RuleBook`, and the records a fired rule becomes.

* :class:`RuleFeed` reads the compacted ``market.rules`` from its beginning on every
  start (after a checkpoint's rules were restored: the topic has the last word, so a rule
  deleted or fired meanwhile goes), then follows it. Every record must carry the
  platform's signature (the gateway signs what it writes, tombstones included): anyone
  able to produce to the broker could otherwise make the platform tell a person anything.
  A record that is not a signed rule under its own id is counted and dropped, never a
  crash.
* :func:`fired_records` says what a firing becomes (pure): the person's
  :class:`~dexorder.contracts.events.Notification` on ``notifications``, for an order
  rule its :class:`~dexorder.contracts.rules.RuleFired` on ``rules.fired``, both signed,
  and the rule written back to ``market.rules`` with ``fired`` set, so no engine fires it
  again. The runner stores the first two before the third (see :class:`FiredWriter`): a
  crash in between makes the rule fire again after the restart, to the same event id,
  which the gateway delivers once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter

from dexorder.contracts.events import Notification, encode_event
from dexorder.contracts.rules import (
    BadRule,
    OrderTrigger,
    RuleFired,
    RuleRecord,
    decode_record,
    encode_fired,
    encode_record,
    notification_kind,
)
from dexorder.kafka import Bootstrap, ensure_topics
from dexorder.kafka import consumer as kafka_consumer
from dexorder.record_signing import ForgedRecord, RecordKeys, signed_record, verify_record
from dexorder.topics import KAFKA_TOPICS, MARKET_RULES, NOTIFICATIONS, RULES_FIRED
from streaming.rules import RuleBook

BAD_RULES = Counter(
    "stream_bad_rule_records_total", "market.rules records dropped: not a signed rule", ["reason"]
)
FIRED = Counter("stream_rules_fired_total", "Market rules fired", ["kind"])

log = structlog.get_logger(part="stream")


class OutRecord(msgspec.Struct, frozen=True):
    """One Kafka record to produce."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = []


def fired_notification(fired: RuleFired) -> Notification:
    """The person's notification of a firing; its event id is the rule's (one per rule)."""
    return Notification(
        event_id=fired.event_id,
        user=fired.rule.user,
        kind=notification_kind(fired.rule),
        payload=msgspec.to_builtins(fired),
        created_at=fired.fired_at,
    )


def fired_records(fired: RuleFired, keys: RecordKeys) -> tuple[list[OutRecord], OutRecord]:
    """What a firing becomes on Kafka: the records to store first (the notification, and
    an order's ``rules.fired``), and then the rule written back fired (``market.rules``)."""
    user = fired.rule.user.encode()
    note = encode_event(fired_notification(fired))
    first = [OutRecord(NOTIFICATIONS, user, note, signed_record(keys, NOTIFICATIONS, note))]
    if isinstance(fired.rule.condition, OrderTrigger):
        value = encode_fired(fired)
        first.append(OutRecord(RULES_FIRED, user, value, signed_record(keys, RULES_FIRED, value)))
    record = encode_record(RuleRecord(rule=fired.rule, fired=fired))
    back = OutRecord(
        MARKET_RULES, fired.rule.id.encode(), record, signed_record(keys, MARKET_RULES, record)
    )
    return first, back


def rule_problem(
    keys: RecordKeys,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
) -> tuple[str, RuleRecord | None] | str:
    """A ``market.rules`` record checked: ``(rule id, record)`` (None: a tombstone), or
    why it is dropped."""
    if key is None:
        return "no key"
    try:
        verify_record(keys, MARKET_RULES, value or b"", headers)
    except ForgedRecord:
        return "unsigned"
    try:
        rule_id = key.decode()
    except UnicodeDecodeError:
        return "bad key"
    if value is None:
        return rule_id, None
    try:
        record = decode_record(value)
    except BadRule:
        return "not a rule"
    if record.rule.id != rule_id:
        return "key is not the rule id"
    return rule_id, record


@dataclass
class RuleFeed:
    """``market.rules`` into ``book``: :meth:`load` reads it all, :meth:`follow` keeps up."""

    bootstrap: Bootstrap
    book: RuleBook
    keys: RecordKeys
    #: records dropped since start, by reason
    dropped: dict[str, int] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None

    async def load(self) -> None:
        """Read the topic from its beginning to its end now; afterwards the book holds
        exactly its active rules (a restored rule the topic no longer has goes)."""
        # made here when missing, so there is always something to follow
        await ensure_topics(self.bootstrap, {MARKET_RULES: KAFKA_TOPICS[MARKET_RULES]})
        consumer = self._consumer = kafka_consumer(
            self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        await consumer.topics()  # fresh metadata: the topic may be new
        parts = [
            TopicPartition(MARKET_RULES, p)
            for p in sorted(consumer.partitions_for_topic(MARKET_RULES) or ())
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        active: set[str] = set()
        remaining = set(parts)
        while remaining:
            # by position, not by the last record's offset: a transactional producer's
            # markers (the Flink job's) take offsets no record has
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if not remaining:
                break
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    self._apply(r.key, r.value, r.headers, active)
        gone = self.book.retain(active)
        log.info("market rules read", active=len(self.book), gone_since_checkpoint=len(gone))

    def _apply(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None,
        active: set[str] | None = None,
    ) -> None:
        checked = rule_problem(self.keys, key, value, list(headers or ()))
        if isinstance(checked, str):
            self.dropped[checked] = self.dropped.get(checked, 0) + 1
            BAD_RULES.labels(checked).inc()
            log.warning("market rule record dropped", key=repr(key)[:80], reason=checked)
            return
        rule_id, record = checked
        if record is None:
            self.book.remove(rule_id)
        else:
            self.book.put(record)
        if active is not None:
            if record is None or record.fired is not None:
                active.discard(rule_id)
            else:
                active.add(rule_id)

    async def follow(self, stop: asyncio.Event) -> None:
        """Apply new records as they come, until ``stop`` is set (after :meth:`load`)."""
        consumer = self._consumer
        assert consumer is not None, "load() first"
        try:
            while not stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=200, max_records=1000)
                except Exception as exc:  # the broker away for a while: keep trying
                    log.warning("market rules: reading failed; trying again", error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
                for records in batch.values():
                    for r in records:
                        self._apply(r.key, r.value, r.headers)
        finally:
            await self.close()

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


@dataclass
class FiredWriter:
    """Produces what fired rules become, in the order that loses nothing: the
    notification (and ``rules.fired``) stored first, then the rule written back fired.

    Each firing is one task; the runner's checkpoint waits for every task started before
    it (:meth:`take_pending`), so a checkpoint never says a rule fired before its
    notification is stored."""

    producer: AIOKafkaProducer
    keys: RecordKeys
    _pending: list[asyncio.Task[None]] = field(default_factory=list)

    def write(self, fired: RuleFired) -> None:
        FIRED.labels(fired.rule.kind).inc()
        self._pending.append(asyncio.create_task(self._write(fired)))

    async def _write(self, fired: RuleFired) -> None:
        first, back = fired_records(fired, self.keys)
        acks = [
            await self.producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in first
        ]
        await asyncio.gather(*acks)
        await (await self.producer.send(back.topic, back.value, key=back.key, headers=back.headers))
        log.info("rule fired", rule=fired.rule.id, user=fired.rule.user, kind=fired.rule.kind)

    def take_pending(self) -> list[asyncio.Task[None]]:
        """The writes started since the last call (for the checkpoint to wait on)."""
        pending, self._pending = self._pending, []
        return pending


@dataclass
class LiveRules:
    """The runner's rules at run time: the book (restored from the checkpoint, then read
    from ``market.rules`` and followed) and the writer of what fires."""

    bootstrap: Bootstrap
    keys: RecordKeys
    book: RuleBook = field(default_factory=RuleBook)
    _feed: RuleFeed | None = None
    _follow: asyncio.Task[None] | None = None
    _writer: FiredWriter | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, producer: AIOKafkaProducer, checkpoint: bytes = b"") -> None:
        """Restore the checkpoint's rule state, read the topic, start following it."""
        if checkpoint:
            self.book.restore(checkpoint)
        self._feed = RuleFeed(self.bootstrap, self.book, self.keys)
        await self._feed.load()
        self._follow = asyncio.create_task(self._feed.follow(self._stop))
        self._writer = FiredWriter(producer, self.keys)

    def fire(self, fired: list[RuleFired]) -> list[asyncio.Task[None]]:
        """Start writing what ``fired`` becomes; the writes, for the checkpoint to wait on."""
        assert self._writer is not None, "start() first"
        for f in fired:
            self._writer.write(f)
        return self._writer.take_pending()

    @property
    def dropped(self) -> dict[str, int]:
        """``market.rules`` records dropped since start, by reason."""
        return dict(self._feed.dropped) if self._feed is not None else {}

    async def stop(self) -> None:
        self._stop.set()
        if self._follow is not None:
            await self._follow
        elif self._feed is not None:
            await self._feed.close()
