"""Fired order rules reach the person's agent: the rule-delivery function, fed by the
trigger dispatcher from ``rules.fired`` on a real Kafka-protocol broker, wakes the sleeping
agent through the gateway and has it apply the fill — once, however often it comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from dexorder.contracts.rules import PriceCross, Rule, RuleFired, encode_fired
from dexorder.kafka import ensure_topics
from dexorder.record_signing import record_keys
from dexorder.tokens import mint_token
from dexorder.topics import RULES_FIRED
from tests.gateway.agent_calls import agent_session
from tests.gateway.rules_on_broker import served_on_broker
from tests.gateway.served import Served
from tests.gateway.test_functions_and_triggers import dispatching, produce, read

pytestmark = pytest.mark.integration

BTC = "BINANCE:BTC/USDT"


@pytest.fixture
async def served(tmp_path: Path, kafka: str) -> AsyncIterator[Served]:
    async with served_on_broker(tmp_path, kafka) as s:
        yield s


async def test_a_fired_order_wakes_the_agent_and_fills_once(served: Served, kafka: str) -> None:
    alice = await served.sign_up("alice@example.com")
    a_id = alice["account"]["id"]
    endpoint = await served.gw.provisioner.ensure(a_id, "free")
    async with agent_session(endpoint.mcp_url, mint_token(served.gw.keys, a_id)) as agent:
        placed = await agent.ok(
            "execute_trade", ticker=BTC, side="buy", quantity=2, order_type="limit", limit_price=90
        )
    order_id = placed["order"]["id"]
    assert served.gw.rules is not None
    (record,) = served.gw.rules.view.of(a_id)
    await served.gw.provisioner.stop(a_id)  # asleep, as after its idle timeout
    assert served.gw.provisioner.state(a_id) == "stopped"

    fired = RuleFired(
        rule=record.rule, fired_at=record.rule.created_at + 1, price=88.0, fill_price=88.0
    )
    signer = record_keys(served.gw.cfg)
    await ensure_topics(kafka, {RULES_FIRED: 3})
    async with served.socket(alice["access_token"]) as ws, dispatching(served, kafka) as d:
        await produce(kafka, RULES_FIRED, encode_fired(fired), key=a_id, signer=signer)
        frame = await ws.until("event")
        assert frame["kind"] == "fill" and frame["payload"]["order_id"] == order_id
        assert frame["payload"]["price"] == 88.0
        # delivered again (a replaying engine, a retry): nothing more happens
        await produce(kafka, RULES_FIRED, encode_fired(fired), key=a_id, signer=signer)
        # an unsigned record, and an alert's rule (nothing to apply), are dead-lettered
        await produce(kafka, RULES_FIRED, b"{}", key=a_id, signer=signer)
        alert = Rule(
            id="alert-x",
            user=a_id,
            ticker=BTC,
            condition=PriceCross(direction="above", level=1),
            created_at=1,
        )
        await produce(
            kafka,
            RULES_FIRED,
            encode_fired(RuleFired(rule=alert, fired_at=2, price=2)),
            key=a_id,
            signer=signer,
        )
        dead = await read(kafka, "rules.fired.dlq", 2)
        assert sorted(dict(r.headers)["knativeerrorcode"] for r in dead) == [b"400", b"400"]
        async with asyncio.timeout(60):
            while d.counters["delivered"] < 2:
                await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await ws.until("event", timeout=1.0)  # no second fill
    assert served.gw.provisioner.state(a_id) == "running"  # woken for it
    endpoint = await served.gw.provisioner.ensure(a_id, "free")
    async with agent_session(endpoint.mcp_url, mint_token(served.gw.keys, a_id)) as agent:
        account = await agent.ok("get_positions")
    assert [p["quantity"] for p in account["positions"]] == [2.0]
    assert account["open_orders"] == [] and served.gw.rules.view.of(a_id) == []
    assert msgspec.json.decode(encode_fired(fired), type=RuleFired) == fired
