"""People's market rules through the gateway: an agent puts, reads and deletes its own
person's rules (``/internal/rules``), the gateway writes them to ``market.rules`` on a
real Kafka-protocol broker (signed, keyed by rule id, tombstones on delete), keeps a view
of the topic with each rule's fired state, holds people to their limits, and removes a
leaving person's rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from dexorder.contracts.rules import (
    OrderTrigger,
    PriceCross,
    Rule,
    RuleFired,
    RuleRecord,
    encode_record,
)
from dexorder.process import free_port
from dexorder.record_signing import record_keys, verify_record
from dexorder.tokens import mint_token
from dexorder.topics import MARKET_RULES
from gateway.api import rules as rules_api
from gateway.platform_calls import platform_token
from gateway.rules import RuleLimits, RuleRefused, RuleStore, RuleView
from tests.gateway.rules_on_broker import broker_settings, served_on_broker, write_fired
from tests.gateway.served import Served, serve_gateway

BTC = "BINANCE:BTC/USDT"


def alert(rule_id: str, user: str, level: float = 70_000.0) -> Rule:
    return Rule(
        id=rule_id,
        user=user,
        ticker=BTC,
        condition=PriceCross(direction="above", level=level),
        created_at=1,
    )


def order(rule_id: str, user: str) -> Rule:
    trigger = OrderTrigger(
        order_id=rule_id, order_type="limit", side="buy", quantity=0.1, level=50_000
    )
    return Rule(id=rule_id, user=user, ticker=BTC, condition=trigger, created_at=2)


async def read(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of ``topic`` (every partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    await consumer.topics()
    consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()])
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


# --- the view, pure -----------------------------------------------------------------------


def test_the_view_follows_the_topic_and_holds_people_to_their_limits() -> None:
    view = RuleView()
    limits = RuleLimits(alerts=2, orders=1, total=3)
    view.apply("a1", encode_record(RuleRecord(rule=alert("a1", "alice"))))
    view.apply("x", b"not a rule")  # skipped, counted
    view.apply("other-key", encode_record(RuleRecord(rule=alert("a9", "alice"))))
    assert view.unreadable == 2 and [r.rule.id for r in view.of("alice")] == ["a1"]

    assert view.admit(alert("a1", "alice"), limits) is not None  # the same again: no write
    with pytest.raises(RuleRefused, match="other terms") as other:
        view.admit(alert("a1", "alice", level=1.0), limits)
    assert other.value.status == 409
    with pytest.raises(RuleRefused, match="taken"):
        view.admit(alert("a1", "bob"), limits)
    assert view.admit(alert("a2", "alice"), limits) is None
    view.keep(RuleRecord(rule=alert("a2", "alice")))
    with pytest.raises(RuleRefused, match="at most 2 active alerts"):
        view.admit(alert("a3", "alice"), limits)
    assert view.admit(order("o1", "alice"), limits) is None  # orders count apart
    # a fired alert no longer counts as active, but it is still kept
    fired = RuleFired(rule=alert("a2", "alice"), fired_at=5, price=70_001.0)
    view.apply("a2", encode_record(RuleRecord(rule=alert("a2", "alice"), fired=fired)))
    assert view.admit(alert("a3", "alice"), limits) is None
    view.keep(RuleRecord(rule=order("o1", "alice")))
    with pytest.raises(RuleRefused, match="at most 3 rules kept"):
        view.admit(alert("a3", "alice"), limits)
    assert view.admit(alert("b1", "bob"), limits) is None  # bob has his own

    view.apply("a1", None)
    assert [r.rule.id for r in view.of("alice")] == ["a2", "o1"]
    assert view.get("a2") is not None and view.get("a2").fired == fired  # type: ignore[union-attr]


# --- the endpoint, on a broker ----------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path, kafka: str) -> AsyncIterator[Served]:
    async with served_on_broker(tmp_path, kafka) as s:
        yield s


async def put(s: Served, rule: Rule | dict[str, Any], token: str | None) -> tuple[int, Any]:
    rule_id = rule.id if isinstance(rule, Rule) else str(rule.get("id", "x"))
    body = msgspec.to_builtins(rule) if isinstance(rule, Rule) else rule
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with s.http.put(f"{s.url}/internal/rules/{rule_id}", json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_an_agent_keeps_its_own_persons_rules_on_the_topic(
    served: Served, kafka: str
) -> None:
    alice = (await served.sign_up("alice@example.com"))["account"]["id"]
    bob = (await served.sign_up("bob@example.com"))["account"]["id"]
    a_token = mint_token(served.gw.keys, alice)  # what alice's agent holds
    b_token = mint_token(served.gw.keys, bob)

    status, body = await put(served, alert("a-1", alice), a_token)
    assert status == 201, body
    assert body["rule"]["id"] == "a-1" and body["fired"] is None
    assert (await put(served, alert("a-1", alice), a_token))[0] == 200  # a retry: no new write
    status, body = await put(served, alert("a-1", alice, level=5), a_token)
    assert status == 409 and "other terms" in body["error"]
    assert (await put(served, order("o-1", alice), a_token))[0] == 201

    # nobody else's agent, nor any other kind of token, touches alice's rules
    assert (await put(served, alert("a-2", alice), None))[0] == 401
    assert (await put(served, alert("a-2", alice), "garbage"))[0] == 401
    status, body = await put(served, alert("a-2", alice), b_token)
    assert status == 403 and "another person" in body["error"]
    pat = mint_token(served.gw.keys, alice, "pat")
    assert (await put(served, alert("a-2", alice), pat))[0] == 403
    assert (await put(served, alert("a-2", alice), platform_token(served.gw.keys)))[0] == 403
    assert (await served.delete("/internal/rules/a-1", token=b_token))[0] == 403
    assert (await served.delete("/internal/rules/a-1", token=None))[0] == 401
    status, body = await served.get("/internal/rules", token=b_token)
    assert status == 200 and body == {"rules": []}

    # bad input: a clear 400
    for bad, says in [
        ({**msgspec.to_builtins(alert("a-3", alice)), "ticker": "NOPE"}, "ticker"),
        ({"id": "a-3", "user": alice}, "not a rule"),
        ({**msgspec.to_builtins(alert("a-3", alice)), "condition": {"type": "moon"}}, "rule"),
        (msgspec.to_builtins(alert("a-4", alice)), "path"),
    ]:
        async with served.http.put(
            f"{served.url}/internal/rules/a-3",
            json=bad,
            headers={"Authorization": f"Bearer {a_token}"},
        ) as r:
            assert r.status == 400, bad
            assert says in (await r.json())["error"]

    status, body = await served.get("/internal/rules", token=a_token)
    assert status == 200 and [r["rule"]["id"] for r in body["rules"]] == ["a-1", "o-1"]

    # on the topic: keyed by rule id, signed as a platform record
    records = await read(kafka, MARKET_RULES, 2)
    keys = record_keys(served.gw.cfg)
    assert sorted(r.key for r in records) == [b"a-1", b"o-1"]
    for record in records:
        verify_record(keys, MARKET_RULES, record.value, record.headers)

    # the engine writes a fired rule back: the view shows it; an order rule that fired is
    # no longer cancellable, an alert that fired can still be deleted
    for rule in (alert("a-1", alice), order("o-1", alice)):
        await write_fired(kafka, keys, RuleFired(rule=rule, fired_at=9, price=49_000.0))
    async with asyncio.timeout(30):
        while any(r.fired is None for r in served.gw.rules.view.of(alice)):  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
    status, body = await served.get("/internal/rules", token=a_token)
    assert [r["fired"]["fired_at"] for r in body["rules"]] == [9, 9]
    status, body = await served.delete("/internal/rules/o-1?unless_fired=1", token=a_token)
    assert status == 409 and "already fired" in body["error"]
    status, body = await served.delete("/internal/rules/a-1", token=a_token)
    assert status == 200 and body["deleted"]["rule"]["id"] == "a-1"
    assert (await served.delete("/internal/rules/a-1", token=a_token))[0] == 404
    of_a1 = [r for r in await read(kafka, MARKET_RULES, 5) if r.key == b"a-1"]
    assert [r.value is None for r in of_a1] == [False, False, True]  # put, fired, tombstone


async def test_limits_and_a_restarted_view(
    served: Served, kafka: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = (await served.sign_up("alice@example.com"))["account"]["id"]
    token = mint_token(served.gw.keys, alice)
    assert served.gw.rules is not None
    served.gw.rules.limits = RuleLimits(alerts=2, orders=1, total=10)
    asked: list[str] = []

    async def ask_stream(ticker: str) -> None:
        asked.append(ticker)

    served.gw.rules.ask_stream = ask_stream  # (the relay is not running here)
    for i in range(2):
        assert (await put(served, alert(f"a-{i}", alice), token))[0] == 201
    async with asyncio.timeout(10):  # a new rule's ticker is asked to be streamed
        while asked != [BTC, BTC]:
            await asyncio.sleep(0.01)
    status, body = await put(served, alert("a-2", alice), token)
    assert status == 409 and "at most 2 active alerts" in body["error"]
    assert (await put(served, order("o-0", alice), token))[0] == 201
    status, body = await put(served, order("o-1", alice), token)
    assert status == 409 and "at most 1 resting orders" in body["error"]
    # an agent gone wild cannot flood the topic: writes are counted a minute
    monkeypatch.setattr(rules_api, "WRITES_PER_MINUTE", 5)  # 5 so far
    status, body = await put(served, order("o-1", alice), token)
    assert status == 429 and "a minute" in body["error"]

    # another gateway (or this one restarted) reads the same rules from the topic
    again: list[str] = []

    async def ask_again(ticker: str) -> None:
        again.append(ticker)

    other = RuleStore(kafka, record_keys(served.gw.cfg), ask_stream=ask_again)
    other.start()
    try:
        async with asyncio.timeout(30):
            await other.ready.wait()
        assert [r.rule.id for r in await other.rules_of(alice)] == ["a-0", "a-1", "o-0"]
        async with asyncio.timeout(10):  # and what its rules watch, once it has read them
            while again != [BTC]:
                await asyncio.sleep(0.01)
    finally:
        await other.close()


async def test_deleting_an_account_removes_its_rules(served: Served, kafka: str) -> None:
    alice = await served.sign_up("alice@example.com")
    bob = await served.sign_up("bob@example.com")
    a_id, b_id = alice["account"]["id"], bob["account"]["id"]
    a_token, b_token = mint_token(served.gw.keys, a_id), mint_token(served.gw.keys, b_id)
    for rule in (alert("a-1", a_id), order("o-1", a_id)):
        assert (await put(served, rule, a_token))[0] == 201
    assert (await put(served, alert("b-1", b_id), b_token))[0] == 201

    status, _ = await served.delete("/api/me", token=alice["access_token"])
    assert status == 200
    # her rules are tombstoned on the topic: a fresh reader finds only bob's
    fresh = RuleStore(kafka, record_keys(served.gw.cfg))
    fresh.start()
    try:
        async with asyncio.timeout(30):
            await fresh.ready.wait()
        assert await fresh.rules_of(a_id) == []
        assert [r.rule.id for r in await fresh.rules_of(b_id)] == ["b-1"]
    finally:
        await fresh.close()
    # and her agent's token, still unexpired, can add none
    assert (await put(served, alert("a-2", a_id), a_token))[0] == 401


def test_a_fired_rule_reads_as_a_line_for_the_person() -> None:
    from dexorder.schemas import UserEvent
    from gateway.channels import event_text

    def text(rule: Rule, **fired: Any) -> str:
        payload = msgspec.to_builtins(RuleFired(rule=rule, fired_at=1, price=70_012.5, **fired))
        return event_text(UserEvent(event_id="e", user="alice", kind="alert", payload=payload))

    assert text(alert("a", "alice")) == "Alert: BINANCE:BTC/USDT went above 70000 (at 70012.5)"
    assert text(order("o", "alice"), fill_price=50_000.0).startswith(
        "Order triggered: limit buy 0.1 BINANCE:BTC/USDT at 50000 (fills at 50000;"
    )


async def test_rules_outlive_a_restart_of_the_embedded_broker(tmp_path: Path) -> None:
    """The embedded broker keeps topics in memory: restarted, it has an empty market.rules.
    The gateway's view still holds the rules, and writes them back, fired state and all."""
    from launcher.broker import start_broker, wait_listening

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, tmp_path / "tansu-1.log")
    wait_listening(broker, port)
    cfg = broker_settings(tmp_path / "home", bootstrap)
    try:
        async with serve_gateway(cfg) as served:
            alice = (await served.sign_up("alice@example.com"))["account"]["id"]
            token = mint_token(served.gw.keys, alice)
            assert (await put(served, alert("a-1", alice), token))[0] == 201
            assert (await put(served, order("o-1", alice), token))[0] == 201
            broker.terminate()
            broker.wait(10)
            broker = start_broker(port, tmp_path / "tansu-2.log")
            wait_listening(broker, port)
            fresh = RuleStore(bootstrap, record_keys(cfg))  # makes the topic again, empty
            fresh.start()
            try:
                async with asyncio.timeout(60):
                    while sorted(r.rule.id for r in fresh.view.of(alice)) != ["a-1", "o-1"]:
                        await asyncio.sleep(0.05)
            finally:
                await fresh.close()
    finally:
        broker.terminate()
        broker.wait(10)
