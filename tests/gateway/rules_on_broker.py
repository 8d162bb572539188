"""The gateway on a real Kafka-protocol broker, as the rules tests run it, and the stream
engine's one write those tests stand in for: a rule written back fired to ``market.rules``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiokafka import AIOKafkaProducer

from dexorder.config import Settings
from dexorder.contracts.rules import RuleFired, RuleRecord, encode_record
from dexorder.process import free_port
from dexorder.record_signing import RecordKeys, signed_record
from dexorder.topics import MARKET_RULES
from tests.gateway.served import Served, serve_gateway


def broker_settings(home: Path, bootstrap: str) -> Settings:
    """The gateway's settings under ``home``, on the broker at ``bootstrap``, on free ports;
    no embedder (the rules need none)."""
    return Settings(
        home=home,
        embedder={"enabled": False},
        kafka={"bootstrap_servers": bootstrap},
        gateway={"port": free_port(), "events_port": free_port()},
    )


@contextlib.asynccontextmanager
async def served_on_broker(tmp_path: Path, bootstrap: str) -> AsyncIterator[Served]:
    """The gateway, its home under ``tmp_path``, on the broker at ``bootstrap``."""
    async with serve_gateway(broker_settings(tmp_path / "home", bootstrap)) as s:
        yield s


async def write_fired(bootstrap: str, keys: RecordKeys, fired: RuleFired) -> None:
    """Write ``fired.rule`` back fired to market.rules, as the stream engine does: keyed by
    rule id, signed as a platform record with ``keys``."""
    value = encode_record(RuleRecord(rule=fired.rule, fired=fired))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            MARKET_RULES,
            value,
            key=fired.rule.id.encode(),
            headers=signed_record(keys, MARKET_RULES, value),
        )
    finally:
        await producer.stop()
