"""Threat: whoever can produce to Kafka speaks to people with the platform's authority.

A record on ``notifications`` becomes a message in a person's chat, delivered by the
platform (a fake "your confirmation code is …" in someone else's chat); one on
``backfill.requests`` becomes work for the ingestors. A record only counts if a platform
part signed it: the trigger dispatcher dead-letters anything else with the reason, and
the functions check again (in the cluster KafkaSource calls them directly).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dexorder.kafka import ensure_topics
from dexorder.record_signing import (
    EXTENSION,
    HEADER,
    RecordKeys,
    record_keys,
    sign,
    signed_record,
)
from gateway.platform_calls import platform_token
from tests.gateway.served import Served, gateway_settings, serve_gateway
from tests.gateway.test_functions_and_triggers import dispatching, read

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


def note(user: str, event_id: str, text: str) -> dict[str, Any]:
    return {"event_id": event_id, "user": user, "kind": "message", "payload": {"text": text}}


def attackers_keys() -> RecordKeys:
    key = Ed25519PrivateKey.generate()
    return RecordKeys(key.public_key(), key)


async def test_a_forged_notification_reaches_nobody_and_a_signed_one_does(
    served: Served, kafka: str
) -> None:
    """Stops a record produced straight to the broker from reaching a person's chat."""
    alice = await served.sign_up("alice@example.com")
    a_id = alice["account"]["id"]
    platform = record_keys(served.gw.cfg)
    lie = json.dumps(note(a_id, "forged-1", "Your confirmation code is 424242")).encode()
    other_topic = json.dumps(note(a_id, "forged-3", "moved from another topic")).encode()
    forged: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (lie, []),  # unsigned
        (lie, signed_record(attackers_keys(), "notifications", lie)),  # the attacker's key
        (other_topic, signed_record(platform, "backfill.requests", other_topic)),
        # a real signature over another value
        (lie, signed_record(platform, "notifications", b'{"event_id": "x"}')),
        (lie, [(HEADER, b"not base64 !!")]),
        (lie, [*signed_record(platform, "notifications", lie), (HEADER, b"AAAA")]),  # two
    ]
    real = json.dumps(note(a_id, "real-1", "hello from the platform")).encode()
    await ensure_topics(kafka, {"notifications": 3})
    async with (
        served.socket(alice["access_token"]) as ws,
        dispatching(served, kafka, retries=1) as d,
    ):
        producer = AIOKafkaProducer(bootstrap_servers=kafka)
        await producer.start()
        try:
            for value, headers in forged:
                await producer.send_and_wait(
                    "notifications", value, key=a_id.encode(), headers=headers
                )
            # the same partition, so the forged ones are judged before it arrives
            await producer.send_and_wait(
                "notifications",
                real,
                key=a_id.encode(),
                headers=signed_record(platform, "notifications", real),
            )
        finally:
            await producer.stop()
        frame = await ws.until("event")
        assert frame["event_id"] == "real-1"
        with pytest.raises(TimeoutError):
            await ws.until("event", timeout=0.5)
        dead = await read(kafka, "notifications.dlq", len(forged))
        assert d.counters["forged"] == len(forged) and d.counters["delivered"] == 1
    reasons = sorted(dict(r.headers)["dexorderrefused"].decode() for r in dead)
    assert all("notifications" in r for r in reasons), reasons
    assert sum("unsigned" in r for r in reasons) == 1
    assert {dict(r.headers)["knativeerrorcode"] for r in dead} == {b"403"}


async def test_the_functions_refuse_a_forged_event_themselves(served: Served) -> None:
    """Stops a forged record where KafkaSource, not the local dispatcher, delivers it."""
    alice = await served.sign_up("alice@example.com")
    a_id = alice["account"]["id"]
    platform = record_keys(served.gw.cfg)
    auth = {"Authorization": f"Bearer {platform_token(served.gw.keys)}"}

    def kafka_event(topic: str, data: dict[str, Any], signature: str | None) -> CloudEvent:
        attrs = {"type": "dev.knative.kafka.event", "source": f"/kafkasources/x#{topic}"}
        if signature is not None:
            attrs[EXTENSION] = signature
        return CloudEvent(attrs, data)

    lie = note(a_id, "f-1", "Your confirmation code is 424242")
    backfill = {"ticker": "BINANCE:BTC/USDT", "timeframe": "1h", "start": 1, "end": 2}
    forged_sig = base64.urlsafe_b64encode(b"\0" * 64).decode()
    async with served.socket(alice["access_token"]) as ws, aiohttp.ClientSession() as http:
        for function, topic, data, signature in (
            ("notification-fanout", "notifications", lie, None),
            ("notification-fanout", "notifications", lie, forged_sig),
            (
                "notification-fanout",
                "notifications",
                lie,
                sign(attackers_keys(), "notifications", lie),
            ),
            ("notification-fanout", "notifications", lie, sign(platform, "backfill.requests", lie)),
            ("backfill-dispatch", "backfill.requests", backfill, None),
            ("backfill-dispatch", "backfill.requests", backfill, forged_sig),
        ):
            headers, body = to_binary(kafka_event(topic, data, signature))
            async with http.post(
                f"{served.url}/functions/{function}/", data=body, headers={**headers, **auth}
            ) as r:
                assert r.status == 403, (function, signature, await r.text())
        with pytest.raises(TimeoutError):
            await ws.until("event", timeout=0.3)
        real = note(a_id, "r-1", "hello")
        headers, body = to_binary(
            kafka_event("notifications", real, sign(platform, "notifications", real))
        )
        async with http.post(
            f"{served.url}/functions/notification-fanout/", data=body, headers={**headers, **auth}
        ) as r:
            assert r.status == 200, await r.text()
        assert (await ws.until("event"))["event_id"] == "r-1"
