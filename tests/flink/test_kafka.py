"""The PyFlink job bound to Kafka (the cluster's configuration), on the embedded broker.

Flink's Kafka SQL connector is a jar that cannot be installed on these machines; this test
runs where ``FLINK_KAFKA_CONNECTOR_JAR`` names one (e.g. flink-sql-connector-kafka-4.0.x
for Flink 2.x) and skips, saying so, everywhere else. Everything else about the job is
tested on the mini-cluster in ``test_job.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dexorder.contracts.events import Notification
from dexorder.contracts.rules import encode_record, fired_event_id
from dexorder.kafka import ensure_topics
from dexorder.market_validation import candle_problem
from dexorder.record_signing import RecordKeys, signed_record, verify_record
from dexorder.schemas import Candle, decode_candle, encode
from dexorder.topics import MARKET_CANDLES, MARKET_RULES, MARKET_TICKS, NOTIFICATIONS
from streaming.engine import fold
from tests.flink import fixture
from tests.flink.conftest import FLINK_PYTHON, ROOT, flink_missing

JAR = os.environ.get("FLINK_KAFKA_CONNECTOR_JAR", "")


def _why_not() -> str | None:
    if not JAR:
        return (
            "FLINK_KAFKA_CONNECTOR_JAR is not set: Flink's Kafka connector jar cannot be "
            "installed here (set it to a flink-sql-connector-kafka jar to run this test)"
        )
    if not Path(JAR).is_file():
        return f"FLINK_KAFKA_CONNECTOR_JAR={JAR} is not a file"
    return flink_missing()


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


async def _produce(bootstrap: str, keys: RecordKeys) -> None:
    await ensure_topics(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        # signed as the gateway signs them; one forged record the job must ignore
        for record in fixture.rules():
            value = encode_record(record)
            await producer.send(
                MARKET_RULES,
                value,
                key=record.rule.id.encode(),
                headers=signed_record(keys, MARKET_RULES, value),
            )
        forged = fixture.rules()[0]
        forged = msgspec.structs.replace(
            forged, rule=msgspec.structs.replace(forged.rule, id="forged", user="mallory")
        )
        await producer.send(MARKET_RULES, encode_record(forged), key=b"forged")
        for tick in fixture.ticks():
            await producer.send(MARKET_TICKS, encode(tick), key=tick.ticker.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _read(
    bootstrap: str, candles: int, notes: int, record_keys: RecordKeys
) -> tuple[list[Candle], list[Notification]]:
    consumer = AIOKafkaConsumer(
        MARKET_CANDLES,
        NOTIFICATIONS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    got: list[Candle] = []
    seen: list[Notification] = []
    signed: list[tuple[bytes, list[tuple[str, bytes]]]] = []
    try:
        async with asyncio.timeout(240):
            while len(got) < candles or len(seen) < notes:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for r in records:
                        if tp.topic == MARKET_CANDLES:
                            got.append(decode_candle(r.value or b""))
                        else:
                            seen.append(msgspec.json.decode(r.value or b"", type=Notification))
                            signed.append((r.value or b"", list(r.headers)))
    finally:
        await consumer.stop()
    for value, headers in signed:
        verify_record(record_keys, NOTIFICATIONS, value, headers)  # the functions act on it
    return got, seen


def test_the_job_reads_and_writes_kafka(kafka: str, tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    keys = RecordKeys(private.public_key(), private)
    (tmp_path / "record.pem").write_bytes(
        private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    asyncio.run(_produce(kafka, keys))
    # the input never ends: only what the ticks themselves close comes out
    expected = fold(fixture.ticks(), fixture.rules(), fixture.LATENESS_MS, close_at_end=False)
    now = int(time.time() * 1000)
    published = [c for c in expected.candles if candle_problem(c, now) is None]
    config = {
        "kafka": {
            "bootstrap": kafka,
            "connector_jar": JAR,
            "startup": "earliest-offset",
            "record_key_file": str(tmp_path / "record.pem"),
        },
        "checkpoints": {"interval_ms": 1000, "dir": (tmp_path / "ck").as_uri()},
        "allowed_lateness_ms": fixture.LATENESS_MS,
    }
    cfg = tmp_path / "job.json"
    cfg.write_bytes(msgspec.json.encode(config))
    log = (tmp_path / "job.log").open("wb")
    proc = subprocess.Popen(
        [str(FLINK_PYTHON), "-m", "streaming.flink.job", "--config", str(cfg)],
        cwd=ROOT,
        env={"FLINK_LOG_DIR": str(tmp_path / "flink-log"), "PATH": "/usr/bin:/bin"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        candles, notes = asyncio.run(_read(kafka, len(published), len(expected.fired), keys))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()

    def key(c: Candle) -> tuple[str, str, int]:
        return (c.ticker, c.timeframe, c.open_time)

    assert sorted(candles, key=key) == sorted(published, key=key)
    # the rules topic is read while the ticks are: a rule fires from the ticks after it
    # arrived, and the fixture's first firing is thousands of ticks in; the forged rule
    # (not signed) never fires
    assert sorted(n.event_id for n in notes) == sorted(
        fired_event_id(f.rule.id) for f in expected.fired
    )
