"""A KafkaSource hands a record already in CloudEvents form over as that event (its own
id), any other as ``dev.knative.kafka.event`` with id ``partition:P/offset:O``: the
notification fanout delivers a notification once either way, since it goes by the
notification's own ``event_id``."""

from __future__ import annotations

import asyncio

import pytest

from dexorder.kafka import ensure_topics
from dexorder.record_signing import record_keys
from tests.gateway.served import Served
from tests.gateway.test_functions_and_triggers import dispatching, note, produce, served

pytestmark = pytest.mark.integration
__all__ = ["served"]  # the fixture


async def test_a_notification_is_delivered_once_in_either_event_form(
    served: Served, kafka: str
) -> None:
    alice = await served.sign_up("alice@example.com")
    user = alice["account"]["id"]
    signer = record_keys(served.gw.cfg)
    await ensure_topics(kafka, {"notifications": 3})
    alert = note(user, "n-7", text="BTC above 100k")
    cloudevent_form = [  # Kafka's binary binding: ce_ headers, the record is the event
        ("ce_specversion", b"1.0"),
        ("ce_id", b"the-producers-own-id"),
        ("ce_source", b"/dexorder/stream"),
        ("ce_type", b"dexorder.notification"),
        ("content-type", b"application/json"),
    ]
    async with served.socket(alice["access_token"]) as ws, dispatching(served, kafka) as d:
        await produce(kafka, "notifications", alert, key=user, signer=signer)
        assert (await ws.until("event"))["event_id"] == "n-7"
        await produce(
            kafka, "notifications", alert, key=user, headers=cloudevent_form, signer=signer
        )
        async with asyncio.timeout(60):  # the function accepted it (200) ...
            while d.counters["delivered"] < 2:
                await asyncio.sleep(0.05)
    assert served.gw.events.stats["duplicates"] == 1  # ... as a duplicate, not sent again
