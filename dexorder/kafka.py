"""Kafka helpers every part shares: topic creation and client construction.

Nothing here is specific to one broker: the same calls work against Apache
Kafka and against the embedded Tansu broker (which does not create topics
automatically, so :func:`ensure_topics` must run first).

Every producer, consumer and admin client is made here (:func:`producer`,
:func:`consumer`, :func:`admin`), from a :class:`~dexorder.kafka_auth.KafkaConnection`
(``cfg.kafka.connection()``: the cluster's TLS and SASL settings) or a bare
``host:port`` (plaintext: one machine, tests), so no client is made without them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from dexorder.kafka_auth import KafkaConnection
from dexorder.topics import COMPACTED_TOPICS, KAFKA_TOPICS

_COMPACT = {"cleanup.policy": "compact"}
#: Where a part's Kafka is: its connection settings, or ``host:port`` (plaintext).
Bootstrap = str | KafkaConnection


def connection_of(bootstrap: Bootstrap) -> KafkaConnection:
    return bootstrap if isinstance(bootstrap, KafkaConnection) else KafkaConnection(bootstrap)


def client_options(bootstrap: Bootstrap) -> dict[str, Any]:
    """The aiokafka keyword arguments every client of ``bootstrap`` is made with."""
    conn = connection_of(bootstrap)
    conn.check()
    options: dict[str, Any] = {
        "bootstrap_servers": conn.bootstrap,
        "security_protocol": conn.security_protocol,
    }
    if conn.uses_tls:
        options["ssl_context"] = create_ssl_context(cafile=conn.ssl_cafile)
    if conn.uses_sasl:
        options["sasl_mechanism"] = conn.sasl_mechanism
        options["sasl_plain_username"] = conn.sasl_username
        options["sasl_plain_password"] = conn.sasl_password
    return options


def producer(bootstrap: Bootstrap, **kwargs: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(bootstrap), **kwargs)


def consumer(bootstrap: Bootstrap, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **client_options(bootstrap), **kwargs)


def admin(bootstrap: Bootstrap, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(bootstrap), **kwargs)


async def ensure_topics(
    bootstrap: Bootstrap, topics: dict[str, int] | None = None, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet, waiting for the broker to come up."""
    wanted = topics or KAFKA_TOPICS
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        client = admin(bootstrap, request_timeout_ms=5000)
        try:
            await client.start()
            existing = set(await client.list_topics())
            missing = [
                # compacted topics keep the latest record per key (a broker that ignores
                # the setting keeps them all: readers take the latest per key anyway)
                NewTopic(t, n, 1, topic_configs=_COMPACT if t in COMPACTED_TOPICS else None)
                for t, n in wanted.items()
                if t not in existing
            ]
            if missing:
                try:
                    await client.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await client.close()
