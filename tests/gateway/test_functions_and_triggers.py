"""The CloudEvents functions, fed by the local trigger dispatcher from a real Kafka-protocol
broker (binary-mode CloudEvents, retries with backoff, the dead-letter topic, replies)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http

from dexorder.kafka import ensure_topics
from dexorder.lake.query import lake_missing
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.record_signing import RecordKeys, record_keys, signed_record
from dexorder.tokens import mint_token
from gateway.platform_calls import platform_token
from launcher.ephemeral import RunningPlatform
from tests.gateway.served import Served, gateway_settings, serve_gateway
from triggers.dispatcher import Dispatcher
from triggers.spec import Trigger, load_triggers

pytestmark = pytest.mark.integration

FAST = {"retries": 2, "backoff_delay_s": 0.01}


def triggers(**over: Any) -> list[Trigger]:
    return [t.model_copy(update={**FAST, **over}) for t in load_triggers()]


@contextlib.asynccontextmanager
async def dispatching(s: Served, bootstrap: str, **over: Any) -> AsyncIterator[Dispatcher]:
    """The dispatcher delivering to ``s``'s functions while the block runs."""
    keys = s.gw.keys
    d = Dispatcher(
        bootstrap,
        triggers(**over),
        lambda t: f"{s.url}/functions/{t.function}/",
        record_keys=record_keys(s.gw.cfg),
        auth=lambda: platform_token(keys),
    )
    task = asyncio.create_task(d.run())
    try:
        async with asyncio.timeout(60):
            while not d.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield d
    finally:
        d.stop()
        await task


async def produce(
    bootstrap: str,
    topic: str,
    value: Any,
    key: str = "k",
    headers: Any = None,
    *,
    signer: RecordKeys,
) -> None:
    """Produce as a platform part does: signed with the platform's record key."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        headers = [*(headers or []), *signed_record(signer, topic, body)]
        await producer.send_and_wait(topic, body, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[Any]:
    await ensure_topics(bootstrap, {topic: 3})
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    await consumer.topics()  # fresh metadata
    partitions = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    got: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


def note(user: str, event_id: str, **payload: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user": user, "kind": "alert", "payload": payload}


async def test_notifications_reach_the_person_once_held_while_away_bad_ones_dead_lettered(
    served: Served, kafka: str
) -> None:
    alice = await served.sign_up("alice@example.com")
    bob = await served.sign_up("bob@example.com")  # has no channel open
    a_id, b_id = alice["account"]["id"], bob["account"]["id"]
    signer = record_keys(served.gw.cfg)
    await ensure_topics(kafka, {"notifications": 3})
    async with served.socket(alice["access_token"]) as ws, dispatching(served, kafka) as d:
        alert = note(
            a_id, "n-1", ticker="BINANCE:BTC/USDT", condition="above", price=1, triggered_price=2
        )
        await produce(kafka, "notifications", alert, key=a_id, signer=signer)
        frame = await ws.until("event")
        assert frame["event_id"] == "n-1" and "went above 1" in frame["text"]

        await produce(kafka, "notifications", alert, key=a_id, signer=signer)  # the same again
        await produce(kafka, "notifications", b"not json", key=a_id, signer=signer)
        away = note(b_id, "n-2", ticker="X")
        await produce(kafka, "notifications", away, key=b_id, signer=signer)
        (dead,) = await read(kafka, "notifications.dlq", 1)
        headers = dict(dead.headers)
        assert headers["knativeerrorcode"] == b"400"  # malformed: at once, not retried
        assert headers["ce-type"] == b"dev.knative.kafka.event"
        assert headers["ce-source"].endswith(b"kafkasources/notification-fanout#notifications")
        async with asyncio.timeout(60):  # bob has no channel: held for him, not refused
            while served.gw.held.count(b_id) == 0:
                await asyncio.sleep(0.02)
        assert d.counters["dead_lettered"] == 1 and d.counters["retries"] == 0
        with pytest.raises(TimeoutError):
            await ws.until("event", timeout=0.5)  # the duplicate was not delivered twice
    assert served.gw.events.stats["duplicates"] == 1
    async with served.socket(bob["access_token"]) as ws:  # bob comes back: he sees it
        frame = await ws.until("event")
        assert frame["event_id"] == "n-2" and frame["payload"] == {"ticker": "X"}
    async with asyncio.timeout(10):  # marked delivered and removed just after it is sent
        while served.gw.held.count(b_id):
            await asyncio.sleep(0.02)


async def test_functions_refuse_callers_without_a_platform_token(served: Served) -> None:
    alice = await served.sign_up("alice@example.com")
    a_id = alice["account"]["id"]
    event = CloudEvent({"type": "x", "source": "/test"}, note(a_id, "n-9"))
    headers, body = to_binary(event)
    async with aiohttp.ClientSession() as http:
        for token in (None, alice["access_token"], mint_token(served.gw.keys, a_id)):
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(
                f"{served.url}/functions/notification-fanout/",
                data=body,
                headers={**headers, **auth},
            ) as r:
                assert r.status == 401
            async with http.post(
                f"{served.url}/internal/notify", json=note(a_id, "n-9"), headers=auth
            ) as r:
                assert r.status in (401, 403)


async def test_the_tool_proxy_answers_a_cloudevent_with_a_cloudevent(
    served: Served, kafka: str
) -> None:
    alice = await served.sign_up("alice@example.com")
    _, pat = await served.post("/api/tokens", {"name": "jobs"}, token=alice["access_token"])
    call = CloudEvent(
        {"type": "dexorder.tool.call", "source": "/test", "subject": "s-1"},
        {"token": pat["token"], "tool": "list_strategies", "arguments": {}},
    )
    headers, body = to_binary(call)
    auth = {"Authorization": f"Bearer {platform_token(served.gw.keys)}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{served.url}/functions/tool-proxy/", data=body, headers={**headers, **auth}
        ) as r:
            assert r.status == 200
            reply = from_http(dict(r.headers), await r.read())
        assert reply["type"] == "dexorder.tool.result" and reply["dexordercallid"] == call["id"]
        data = reply.get_data()
        result = json.loads(data) if isinstance(data, bytes | str) else data
        assert (
            result is not None
            and not result["is_error"]
            and "sma_cross" in json.dumps(result["result"])
        )

        forged = CloudEvent(
            {"type": "dexorder.tool.call", "source": "/test"},
            {"token": "not-a-token", "tool": "list_strategies"},
        )
        h2, b2 = to_binary(forged)
        async with http.post(
            f"{served.url}/functions/tool-proxy/", data=b2, headers={**h2, **auth}
        ) as r:
            assert r.status == 401

    # through Kafka, as the cluster's Kafka Broker does it (triggers/knative.py): a record
    # that is no dexorder.tool.call CloudEvent (a plain record, which KafkaSource makes a
    # dev.knative.kafka.event) reaches no function; a call's reply lands on tool.results
    # as a KafkaSink writes it (binary mode, Kafka's ce_ headers)
    await ensure_topics(kafka, {"tool.calls": 3})
    async with dispatching(served, kafka) as d:
        await produce(kafka, "tool.calls", json.loads(body), signer=record_keys(served.gw.cfg))
        async with asyncio.timeout(30):
            while d.counters["unmatched"] < 1:
                await asyncio.sleep(0.05)
        await produce(
            kafka,
            "tool.calls",
            body,
            headers=[
                ("ce_" + k[3:], v.encode()) for k, v in headers.items() if k != "content-type"
            ],
            signer=record_keys(served.gw.cfg),
        )
        (result_record,) = await read(kafka, "tool.results", 1)
        assert d.counters["delivered"] == 1 and d.counters["unmatched"] == 1
    reply_headers = {k: v.decode() for k, v in result_record.headers}
    assert reply_headers["ce_type"] == "dexorder.tool.result"
    assert reply_headers["ce_dexordercallid"] == call["id"]
    assert "sma_cross" in result_record.value.decode()


async def test_backfill_requests_from_kafka_reach_the_lake(platform: RunningPlatform) -> None:
    cfg = platform.cfg
    bootstrap = cfg.kafka.bootstrap_servers or f"127.0.0.1:{cfg.kafka.embedded_port}"
    start, end = 1_704_067_200_000, 1_704_067_200_000 + 24 * 3_600_000
    async with serve_gateway(cfg) as s, dispatching(s, bootstrap) as d:
        await produce(
            bootstrap,
            "backfill.requests",
            {"ticker": "BINANCE:BTC/USDT", "timeframe": "1h", "start": start, "end": end},
            signer=record_keys(cfg),
        )
        await produce(
            bootstrap,
            "backfill.requests",
            {"ticker": "NOPE", "timeframe": "1h", "start": 1, "end": 2},
            signer=record_keys(cfg),
        )
        (dead,) = await read(bootstrap, "backfill.requests.dlq", 1)
        assert dict(dead.headers)["knativeerrorcode"] == b"400"
        table = ohlc_table(open_catalog(cfg), cfg.lake.namespace)
        async with asyncio.timeout(120):
            while True:
                table.refresh()
                if not lake_missing(table, "BINANCE:BTC/USDT", "1h", start, end):
                    break
                await asyncio.sleep(0.2)
        assert d.counters["delivered"] >= 1


async def test_a_restarted_dispatcher_resumes_after_what_it_delivered(
    served: Served, kafka: str
) -> None:
    alice = await served.sign_up("alice@example.com")
    a_id = alice["account"]["id"]
    signer = record_keys(served.gw.cfg)
    await ensure_topics(kafka, {"notifications": 3})
    async with served.socket(alice["access_token"]) as ws:
        # while no dispatcher runs
        await produce(kafka, "notifications", note(a_id, "r-1"), key=a_id, signer=signer)
        async with dispatching(served, kafka) as d:
            assert (await ws.until("event"))["event_id"] == "r-1"
        assert d.counters["delivered"] == 1
        await produce(kafka, "notifications", note(a_id, "r-2"), key=a_id, signer=signer)
        async with dispatching(served, kafka) as d:
            assert (await ws.until("event"))["event_id"] == "r-2"
        assert d.counters["delivered"] == 1  # r-1 was not sent again
