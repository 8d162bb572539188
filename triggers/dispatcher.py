"""The local dispatcher: Kafka records → CloudEvents functions over HTTP, as KafkaSource does.

Each record becomes a binary-mode CloudEvent (``ce-*`` headers, the record value as the
body, type ``dev.knative.kafka.event``, id ``partition:P/offset:O``, the key as
``ce-key``). A delivery failing with a retryable status (5xx, 404, 408, 409, 429, or no
answer) is retried with backoff; one that still fails, or fails with another 4xx, goes to
the dead-letter topic with Knative's ``knativeerror*`` headers. Offsets are committed
only once a record is delivered or dead-lettered, so a restart loses nothing.

Only platform parts may make a function act: a record without a valid platform
signature (``dexorder/record_signing.py``) is never delivered. It goes straight to the
dead-letter topic with its reason in ``dexorderrefused`` (and ``knativeerrorcode`` 403),
and is counted in ``forged`` and ``triggers_forged_records_total``. The other record
headers travel on as ``kafkaheader<name>`` extensions, as KafkaSource sends them, so the
function can check the signature again (in the cluster it is the only check).

A signed record whose data is not its topic's event type
(:mod:`dexorder.contracts.events`, the decode the function itself uses) is not delivered
either: it goes to the dead-letter topic with ``knativeerrorcode`` 400 and the reason in
``knativeerrordata``, as if the function had answered it.

A trigger whose reply goes on (``reply_topic``: the tool proxy) runs through a Kafka
Broker in the cluster (``triggers/knative.py``), because a KafkaSource drops replies. The
dispatcher does what that Broker does: only events of the Trigger's ``event_type`` reach
the function (a record that is not one, e.g. a plain record KafkaSource would make a
``dev.knative.kafka.event``, is not delivered: counted in ``unmatched``), and only a
reply of ``reply_type`` is written to ``reply_topic``, as a KafkaSink writes it (binary
mode, ``ce_`` headers); any other reply is dropped and counted. Records already in
CloudEvents form (``ce_`` headers, Kafka's binding, or ``ce-``) keep their attributes.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter

from dexorder import kafka
from dexorder.contracts.events import BadEvent, check_record
from dexorder.health import PartCounters
from dexorder.kafka import ensure_topics
from dexorder.record_signing import ForgedRecord, RecordKeys, verify_record
from dexorder.record_signing import record_keys as configured_record_keys
from triggers.spec import Trigger

if TYPE_CHECKING:
    from dexorder.config import Settings

log = structlog.get_logger(part="triggers")

KAFKA_EVENT_TYPE = "dev.knative.kafka.event"
RETRYABLE = frozenset({404, 408, 409, 429})
FORGED = Counter(
    "triggers_forged_records_total", "Records refused for want of a platform signature", ["trigger"]
)
DELIVERED = Counter("triggers_delivered_total", "Events the function accepted", ["trigger"])
RETRIES = Counter("triggers_retries_total", "Deliveries tried again", ["trigger"])
DEAD_LETTERED = Counter("triggers_dead_lettered_total", "Records sent to the DLQ", ["trigger"])
REPLIES = Counter("triggers_replies_total", "Function replies produced to Kafka", ["trigger"])
UNMATCHED = Counter(
    "triggers_unmatched_total",
    "Events or replies no Broker Trigger's type filter takes (not delivered, as in the cluster)",
    ["trigger"],
)


def _extension_name(header: str) -> str:
    """KafkaSource's extension name for a record header: lower case, letters and digits only."""
    return "kafkaheader" + "".join(c for c in header.lower() if c.isascii() and c.isalnum())


def cloudevent_headers(trigger: Trigger, record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    """The binary-mode CloudEvent headers KafkaSource sends for ``record``."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"partition:{record.partition}/offset:{record.offset}",
        "ce-source": f"/apis/v1/namespaces/dexorder/kafkasources/{trigger.name}#{record.topic}",
        "ce-type": KAFKA_EVENT_TYPE,
        "ce-subject": f"partition:{record.partition}#{record.offset}",
        "ce-time": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
        "content-type": "application/json",
    }
    if record.key is not None:
        headers["ce-key"] = record.key.decode(errors="replace")
    for name, value in record.headers or ():
        lowered = name.lower()
        if lowered == "content-type":
            headers[lowered] = value.decode(errors="replace")
        elif lowered.startswith(("ce_", "ce-")):  # a CloudEvent already (Kafka binding: ce_)
            headers["ce-" + lowered[3:]] = value.decode(errors="replace")
        else:
            headers[f"ce-{_extension_name(name)}"] = value.decode(errors="replace")
    return headers


def event_type(trigger: Trigger, record: ConsumerRecord[bytes, bytes]) -> str:
    """The CloudEvent type ``record`` arrives as (its own, or KafkaSource's)."""
    return cloudevent_headers(trigger, record)["ce-type"]


def kafka_reply_headers(http_headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """A binary-mode CloudEvent's HTTP headers as a KafkaSink writes them (``ce_`` headers,
    the Kafka protocol binding's, and the content type)."""
    return [
        ("ce_" + k[3:] if k.startswith("ce-") else k, v.encode())
        for k, v in http_headers.items()
        if k.startswith("ce-") or k == "content-type"
    ]


class Delivery:
    """What became of one record."""

    def __init__(self, status: int | None, body: bytes, headers: dict[str, str], attempts: int):
        self.status, self.body, self.headers, self.attempts = status, body, headers, attempts

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Dispatcher:
    """Runs every trigger: one consumer group per trigger, records in order per partition."""

    def __init__(
        self,
        bootstrap: kafka.Bootstrap,
        triggers: list[Trigger],
        url_for: Callable[[Trigger], str],
        *,
        record_keys: RecordKeys,
        auth: Callable[[], str] | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.triggers = triggers
        self.url_for = url_for
        self.record_keys = record_keys
        self.auth = auth
        self.timeout_s = timeout_s
        #: figures for ``/healthz`` (all triggers), counted from construction
        self.counters = PartCounters(
            {
                "delivered": DELIVERED,
                "retries": RETRIES,
                "dead_lettered": DEAD_LETTERED,
                "replies": REPLIES,
                "forged": FORGED,
                "unmatched": UNMATCHED,
            }
        )
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    @classmethod
    def from_config(
        cls, cfg: Settings, triggers: list[Trigger], auth: Callable[[], str] | None = None
    ) -> Dispatcher:
        """The dispatcher of ``triggers`` to the functions the gateway of ``cfg`` hosts,
        checking records with the platform's record keys; ``auth`` makes its bearer token."""
        functions = f"{cfg.gateway.url}/functions"
        return cls(
            cfg.kafka.connection(),
            triggers,
            lambda t: f"{functions}/{t.function}/",
            record_keys=configured_record_keys(cfg),
            auth=auth,
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        topics: dict[str, int] = {}
        for t in self.triggers:
            topics[t.topic] = 3
            for extra in (t.dead_letter_topic, t.reply_topic):
                if extra:
                    topics[extra] = 3
        await ensure_topics(self.bootstrap, topics)
        producer = kafka.producer(self.bootstrap, acks="all")
        await producer.start()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                consumers = [await self._consumer(t) for t in self.triggers]
                self.ready.set()
                try:
                    await asyncio.gather(
                        *(
                            self._run_trigger(t, c, http, producer)
                            for t, c in zip(self.triggers, consumers, strict=True)
                        )
                    )
                finally:
                    for c in consumers:
                        await c.stop()
        finally:
            await producer.stop()

    async def _consumer(self, trigger: Trigger) -> AIOKafkaConsumer:
        # One dispatcher serves a machine: it takes every partition itself instead of
        # joining a consumer group (joins cost seconds each on the embedded broker); the
        # group id keeps its committed offsets, so a restart resumes where it stopped.
        consumer = kafka.consumer(
            self.bootstrap,
            group_id=f"dexorder-trigger-{trigger.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # the broker may hold a fetch for its whole max wait even once records are in:
            # a person's alert or fill would wait for it (500 ms by default)
            fetch_max_wait_ms=20,
        )
        await consumer.start()
        await consumer.topics()  # fresh metadata: the topic was just made
        partitions = consumer.partitions_for_topic(trigger.topic) or set()
        consumer.assign([TopicPartition(trigger.topic, p) for p in sorted(partitions)])
        return consumer

    async def _run_trigger(
        self,
        trigger: Trigger,
        consumer: AIOKafkaConsumer,
        http: aiohttp.ClientSession,
        producer: AIOKafkaProducer,
    ) -> None:
        while not self._stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=100)
            for tp, records in batches.items():
                for record in records:
                    if trigger.event_type and event_type(trigger, record) != trigger.event_type:
                        # through a Broker only the Trigger's type reaches the function
                        self._unmatched(trigger, record, event_type(trigger, record))
                        await consumer.commit(
                            {TopicPartition(tp.topic, tp.partition): record.offset + 1}
                        )
                        continue
                    try:
                        verify_record(
                            self.record_keys, trigger.topic, record.value or b"", record.headers
                        )
                    except ForgedRecord as exc:
                        await self._refuse(trigger, record, str(exc), producer)
                        await consumer.commit(
                            {TopicPartition(tp.topic, tp.partition): record.offset + 1}
                        )
                        continue
                    try:
                        check_record(trigger.topic, record.value or b"")
                    except BadEvent as exc:  # the function would answer 400: not sent
                        delivery = Delivery(exc.status, str(exc).encode(), {}, 0)
                    else:
                        delivery = await self.deliver(trigger, record, http)
                    if delivery.ok:
                        DELIVERED.labels(trigger.name).inc()
                        if trigger.reply_topic and delivery.headers.get("ce-id"):
                            await self._reply(trigger, record, delivery, producer)
                    else:
                        await self._dead_letter(trigger, record, delivery, producer)
                    await consumer.commit(
                        {TopicPartition(tp.topic, tp.partition): record.offset + 1}
                    )

    async def deliver(
        self, trigger: Trigger, record: ConsumerRecord[bytes, bytes], http: aiohttp.ClientSession
    ) -> Delivery:
        """POST ``record`` as a CloudEvent, retrying as the trigger says."""
        headers = cloudevent_headers(trigger, record)
        url = self.url_for(trigger)
        attempt = 0
        while True:
            attempt += 1
            if self.auth is not None:
                headers["Authorization"] = f"Bearer {self.auth()}"
            status: int | None
            try:
                async with http.post(url, data=record.value or b"", headers=headers) as r:
                    status, body = r.status, await r.read()
                    reply_headers = {k.lower(): v for k, v in r.headers.items()}
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, body, reply_headers = None, str(exc).encode(), {}
            if status is not None and 200 <= status < 300:
                return Delivery(status, body, reply_headers, attempt)
            retryable = status is None or status >= 500 or status in RETRYABLE
            if not retryable or attempt > trigger.retries:
                return Delivery(status, body, reply_headers, attempt)
            RETRIES.labels(trigger.name).inc()
            await asyncio.sleep(trigger.delay(attempt))

    async def _refuse(
        self,
        trigger: Trigger,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        producer: AIOKafkaProducer,
    ) -> None:
        """Dead-letter a record no platform part signed, without delivering it."""
        FORGED.labels(trigger.name).inc()
        await self._dead_letter(
            trigger, record, Delivery(403, reason.encode(), {}, 0), producer, refused=reason
        )

    async def _dead_letter(
        self,
        trigger: Trigger,
        record: ConsumerRecord[bytes, bytes],
        delivery: Delivery,
        producer: AIOKafkaProducer,
        refused: str | None = None,
    ) -> None:
        DEAD_LETTERED.labels(trigger.name).inc()
        log.warning(
            "record dead-lettered",
            trigger=trigger.name,
            status=delivery.status,
            attempts=delivery.attempts,
            offset=record.offset,
            refused=refused,
        )
        if trigger.dead_letter_topic is None:
            return
        headers = [(k, v.encode()) for k, v in cloudevent_headers(trigger, record).items()] + [
            ("knativeerrordest", self.url_for(trigger).encode()),
            ("knativeerrorcode", str(delivery.status or 0).encode()),
            ("knativeerrordata", base64.b64encode(delivery.body[:1024])),
        ]
        if refused is not None:
            headers.append(("dexorderrefused", refused.encode()))
        await producer.send_and_wait(
            trigger.dead_letter_topic, record.value, key=record.key, headers=headers
        )

    async def _reply(
        self,
        trigger: Trigger,
        record: ConsumerRecord[bytes, bytes],
        delivery: Delivery,
        producer: AIOKafkaProducer,
    ) -> None:
        assert trigger.reply_topic is not None
        if trigger.reply_type and delivery.headers.get("ce-type") != trigger.reply_type:
            # the reply goes back into the Broker, whose reply Trigger takes only reply_type
            self._unmatched(trigger, record, delivery.headers.get("ce-type"))
            return
        headers: list[tuple[str, Any]] = kafka_reply_headers(delivery.headers)
        await producer.send_and_wait(
            trigger.reply_topic, delivery.body, key=record.key, headers=headers
        )
        REPLIES.labels(trigger.name).inc()

    def _unmatched(
        self, trigger: Trigger, record: ConsumerRecord[bytes, bytes], kind: str | None
    ) -> None:
        UNMATCHED.labels(trigger.name).inc()
        log.warning(
            "no Broker Trigger takes this type: not delivered",
            trigger=trigger.name,
            type=kind,
            offset=record.offset,
        )
