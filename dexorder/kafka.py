"""Kafka helpers every part shares: topic creation and client construction.

Nothing here is specific to one broker: the same calls work against Apache
Kafka and against the embedded Tansu broker (which does not create topics
automatically, so :func:`ensure_topics` must run first).
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from dexorder.topics import COMPACTED_TOPICS, KAFKA_TOPICS

_COMPACT = {"cleanup.policy": "compact"}


async def ensure_topics(
    bootstrap: str, topics: dict[str, int] | None = None, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet, waiting for the broker to come up."""
    wanted = topics or KAFKA_TOPICS
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                # compacted topics keep the latest record per key (a broker that ignores
                # the setting keeps them all: readers take the latest per key anyway)
                NewTopic(t, n, 1, topic_configs=_COMPACT if t in COMPACTED_TOPICS else None)
                for t, n in wanted.items()
                if t not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()
