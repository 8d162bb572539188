"""Noticing a topic that was created again under a running consumer.

The embedded broker (Tansu, memory storage) loses its topics when it restarts;
they come back empty. A consumer that resumes from its checkpointed or
committed offsets then asks for offsets far beyond the new log end. Apache
Kafka answers that with OffsetOutOfRange (and ``auto_offset_reset`` moves the
consumer); Tansu answers with no records and the new log end, for ever. A
position can only be beyond the log end when the log was replaced, so such a
partition is read again from its beginning.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter
from structlog.typing import FilteringBoundLogger


@dataclass(frozen=True)
class Rewound:
    """A partition moved back to its beginning."""

    tp: TopicPartition
    #: where the consumer was (beyond the log end)
    was: int
    #: the log end the broker reported
    log_end: int
    #: where it reads from now
    start: int


async def rewind_recreated(
    consumer: AIOKafkaConsumer, log: FilteringBoundLogger, resets: Counter
) -> list[Rewound]:
    """Seek every assigned partition whose position is beyond its log end to its beginning,
    saying so in ``log`` and counting it in ``resets`` (labelled by topic).

    Uses the log end of the latest fetch response (no extra request when all is well).
    """
    out: list[Rewound] = []
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue  # nothing fetched since the assignment or the last seek
        position = await consumer.position(tp)
        if position <= high:
            continue
        start = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, start)
        log.warning(
            "offset beyond the log end: topic created again; reading it from the start",
            topic=tp.topic,
            partition=tp.partition,
            offset=position,
            log_end=high,
        )
        resets.labels(tp.topic).inc()
        out.append(Rewound(tp, position, high, start))
    return out
