"""A tool call runs once however often its event is delivered (delivery is at least once):
a redelivery gets the stored reply, with the same reply id and data; in both id forms
(the producer's own CloudEvent id, KafkaSource's ``partition:P/offset:O``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http

from dexorder.contracts.events import ToolCall, encode_event
from gateway.call_once import (
    CallRecord,
    CallStore,
    Decision,
    MemoryCallStore,
    RedisCallStore,
    call_digest,
    call_key,
    decide,
)
from gateway.platform_calls import platform_token
from tests.gateway.served import Served, gateway_settings, serve_gateway

REDIS = "redis://127.0.0.1:6379/0"
ALERT = {"ticker": "BINANCE:BTC/USDT", "condition": "above", "price": 100_000.0}
KAFKASOURCE = "/apis/v1/namespaces/dexorder/kafkasources/tool-proxy#tool.calls"


# --- the rule and the stores --------------------------------------------------------------


def test_what_a_delivery_does() -> None:
    mine = CallRecord(digest="d", claimed_at=100.0)
    done = CallRecord(digest="d", claimed_at=100.0, reply_id="r", reply=b"{}")
    assert decide(None, "d", 100.0, 10) is Decision.RUN
    assert decide(done, "d", 105.0, 10) is Decision.REPLAY
    assert decide(done, "d", 10_000.0, 10) is Decision.REPLAY  # a reply never goes stale
    assert decide(mine, "d", 105.0, 10) is Decision.RUNNING
    assert decide(mine, "d", 110.0, 10) is Decision.INTERRUPTED  # its run died midway
    assert decide(mine, "other", 105.0, 10) is Decision.CONFLICT
    assert decide(done, "other", 105.0, 10) is Decision.CONFLICT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _one_claim_wins(store: CallStore, key: str) -> None:
    records = [CallRecord(digest=str(i), claimed_at=0.0) for i in range(20)]
    got = await asyncio.gather(*(store.claim(key, r, 60) for r in records))
    winners = [r for r, g in zip(records, got, strict=True) if g is None]
    assert len(winners) == 1
    assert all(g == winners[0] for g in got if g is not None)  # the others see the winner's
    done = CallRecord(digest=winners[0].digest, claimed_at=0.0, reply_id="r", reply=b'{"a":1}')
    await store.put(key, done, 60)
    assert await store.get(key) == done
    await store.release(key)
    assert await store.get(key) is None


async def test_the_memory_store_takes_one_claim_and_forgets_after_its_expiry() -> None:
    clock = Clock()
    store = MemoryCallStore(clock)
    await _one_claim_wins(store, "k")
    assert await store.claim("k", CallRecord(digest="a", claimed_at=0), 30) is None
    clock.now += 29
    assert await store.get("k") is not None
    clock.now += 1
    assert await store.get("k") is None
    assert await store.claim("k", CallRecord(digest="b", claimed_at=0), 30) is None


async def test_the_redis_store_takes_one_claim_and_expires() -> None:
    prefix = f"dexorder:test:{uuid.uuid4().hex}:"
    store = RedisCallStore(REDIS, prefix=prefix)
    probe = redis.from_url(REDIS)
    try:
        await _one_claim_wins(store, "k")
        assert await store.claim("k", CallRecord(digest="a", claimed_at=0), 30) is None
        ttl = await probe.ttl(prefix + "k")
        assert 0 < ttl <= 30
    finally:
        await probe.delete(prefix + "k")
        await probe.aclose()
        await store.close()


# --- the tool proxy, twice ---------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    over = {"redis_url": REDIS} if request.param == "redis" else {}
    async with serve_gateway(gateway_settings(tmp_path / "home", **over)) as s:
        yield s


async def _pat(served: Served, email: str) -> str:
    person = await served.sign_up(email)
    _, pat = await served.post("/api/tokens", {"name": "jobs"}, token=person["access_token"])
    return str(pat["token"])


def _call(token: str, tool: str, arguments: dict[str, Any], **attrs: str) -> CloudEvent:
    return CloudEvent(
        {"type": "dexorder.tool.call", "source": "/test", **attrs},
        {"token": token, "tool": tool, "arguments": arguments},
    )


async def _deliver(served: Served, event: CloudEvent) -> tuple[int, CloudEvent | str]:
    headers, body = to_binary(event)
    auth = {"Authorization": f"Bearer {platform_token(served.gw.keys)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{served.url}/functions/tool-proxy/", data=body, headers={**headers, **auth}
        ) as r,
    ):
        if r.status != 200:
            return r.status, await r.text()
        return r.status, from_http(dict(r.headers), await r.read())


def _data(reply: CloudEvent | str) -> Any:
    assert isinstance(reply, CloudEvent)
    data = reply.get_data()
    return json.loads(data) if isinstance(data, bytes | str) else data


async def _alerts(served: Served, token: str) -> list[Any]:
    status, reply = await _deliver(served, _call(token, "list_alerts", {}))
    assert status == 200, reply
    alerts: list[Any] = _data(reply)["result"]["alerts"]
    return alerts


async def test_a_redelivered_call_runs_once_and_gets_the_same_reply(served: Served) -> None:
    alice = await _pat(served, "alice@example.com")
    cloudevent_id = _call(alice, "set_alert", ALERT, id="the-producers-own-id")
    first = await _deliver(served, cloudevent_id)
    again = await _deliver(served, cloudevent_id)
    assert first[0] == again[0] == 200, (first, again)
    assert isinstance(first[1], CloudEvent) and isinstance(again[1], CloudEvent)
    assert first[1]["id"] == again[1]["id"] and _data(first[1]) == _data(again[1])
    assert not _data(first[1])["is_error"]
    assert len(await _alerts(served, alice)) == 1

    # KafkaSource's form of id, the two deliveries at once: one runs, the other waits
    offset_form = _call(
        alice,
        "set_alert",
        {**ALERT, "price": 90_000.0},
        id="partition:0/offset:41",
        source=KAFKASOURCE,
    )
    both = await asyncio.gather(_deliver(served, offset_form), _deliver(served, offset_form))
    assert [s for s, _ in both] == [200, 200], both
    (a, b) = (r for _, r in both)
    assert isinstance(a, CloudEvent) and isinstance(b, CloudEvent)
    assert a["id"] == b["id"] and _data(a) == _data(b) and a["id"] != first[1]["id"]
    assert a["dexordercallid"] == "partition:0/offset:41"
    assert len(await _alerts(served, alice)) == 2

    # the same id from another person is their own call, not alice's reply
    bob = await _pat(served, "bob@example.com")
    status, bobs = await _deliver(
        served, _call(bob, "set_alert", ALERT, id="partition:0/offset:41", source=KAFKASOURCE)
    )
    assert status == 200 and isinstance(bobs, CloudEvent) and bobs["id"] != a["id"]
    assert len(await _alerts(served, bob)) == 1 and len(await _alerts(served, alice)) == 2

    # the same id for another call is refused, not answered with the first call's reply
    reused = _call(alice, "set_alert", {**ALERT, "price": 1.0}, id="the-producers-own-id")
    status, text = await _deliver(served, reused)
    assert status == 422 and "another call" in str(text)
    assert len(await _alerts(served, alice)) == 2


async def test_a_call_whose_run_died_midway_is_answered_never_run_again(tmp_path: Path) -> None:
    """A claim without a reply past the lease (its pod was killed mid-call): the tool may
    have run, so a redelivery answers with an error saying so, the same one every time."""
    prefix = "dexorder:toolcalls:"  # the tool proxy's own, in a Redis shared by this test only
    async with serve_gateway(gateway_settings(tmp_path / "home", redis_url=REDIS)) as served:
        person = await served.sign_up("carol@example.com")
        _, pat = await served.post("/api/tokens", {"name": "j"}, token=person["access_token"])
        call = _call(pat["token"], "set_alert", ALERT, id=f"died-{uuid.uuid4().hex}")
        key = call_key(person["account"]["id"], "/test", call["id"])
        content = encode_event(ToolCall(tool="set_alert", arguments=ALERT))
        lease = served.gw.cfg.gateway.tool_call_lease_s
        store = RedisCallStore(REDIS, prefix=prefix)
        try:
            died = CallRecord(
                digest=call_digest("set_alert", content), claimed_at=time.time() - lease - 1
            )
            assert await store.claim(key, died, 60) is None
            first = await _deliver(served, call)
            again = await _deliver(served, call)
        finally:
            await store.release(key)
            await store.close()
        assert first[0] == again[0] == 200
        assert isinstance(first[1], CloudEvent) and isinstance(again[1], CloudEvent)
        assert first[1]["id"] == again[1]["id"]
        result = _data(first[1])
        assert result["is_error"] and "may or may not have run" in result["result"]
        assert await _alerts(served, pat["token"]) == []  # not run by the redeliveries
