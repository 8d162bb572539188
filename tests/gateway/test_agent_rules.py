"""A person's agent where the platform watches the market: its alerts and resting paper
orders are rules it registers through the gateway (on a real Kafka-protocol broker), a
fired order rule is applied once however often it is delivered, and neither alerts nor
orders keep the agent awake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from dexorder.contracts.rules import (
    OrderTrigger,
    PercentMove,
    PriceCross,
    Rule,
    RuleFired,
    VolumeSpike,
)
from dexorder.process import active_triggers
from dexorder.record_signing import record_keys
from dexorder.tokens import mint_token
from tests.gateway.agent_calls import agent_session
from tests.gateway.rules_on_broker import served_on_broker, write_fired
from tests.gateway.served import Served

pytestmark = pytest.mark.integration

BTC = "BINANCE:BTC/USDT"


@pytest.fixture
async def served(tmp_path: Path, kafka: str) -> AsyncIterator[Served]:
    async with served_on_broker(tmp_path, kafka) as s:
        yield s


async def engine_fires(served: Served, rule: Rule) -> None:
    """Write ``rule`` back fired to market.rules, as the stream engine does; wait for the
    gateway's view to show it."""
    assert served.gw.rules is not None and served.gw.cfg.kafka.bootstrap_servers
    fired = RuleFired(rule=rule, fired_at=rule.created_at + 1, price=1.0, fill_price=1.0)
    keys = record_keys(served.gw.cfg)
    await write_fired(served.gw.cfg.kafka.bootstrap_servers, keys, fired)
    async with asyncio.timeout(30):
        while (r := served.gw.rules.view.get(rule.id)) is None or r.fired is None:
            await asyncio.sleep(0.02)


async def test_alerts_and_resting_orders_are_platform_rules(served: Served) -> None:
    a_id = (await served.sign_up("alice@example.com"))["account"]["id"]
    endpoint = await served.gw.provisioner.ensure(a_id, "free")
    rules = served.gw.rules
    assert rules is not None

    def mine() -> dict[str, object]:
        return {r.rule.id: r.rule.condition for r in rules.view.of(a_id)}

    async with agent_session(endpoint.mcp_url, mint_token(served.gw.keys, a_id)) as agent:
        alert = await agent.ok("set_alert", ticker="binance:btc/usdt", condition="above", price=120)
        assert alert["ticker"] == BTC and alert["id"].startswith("alert-")
        assert mine()[alert["id"]] == PriceCross(direction="above", level=120)
        listed = await agent.ok("list_alerts")
        assert [a["id"] for a in listed["alerts"]] == [alert["id"]]
        assert "price" in await agent.refused("set_alert", ticker=BTC, condition="above", price=-1)

        move = await agent.ok(
            "set_market_alert",
            ticker=BTC,
            kind="percent_move",
            percent=5,
            window_s=600,
            direction="down",
        )
        spike = await agent.ok(
            "set_market_alert", ticker=BTC, kind="volume_spike", multiple=3, timeframe="5m"
        )
        assert mine()[move["id"]] == PercentMove(percent=5, window_ms=600_000, direction="down")
        assert mine()[spike["id"]] == VolumeSpike(timeframe="5m", multiple=3, lookback=20)
        assert "needs percent and window_s" in await agent.refused(
            "set_market_alert", ticker=BTC, kind="percent_move", percent=5
        )
        listed = await agent.ok("list_alerts")
        assert [a["kind"] for a in listed["market_alerts"]] == ["percent_move", "volume_spike"]
        assert (await agent.ok("delete_alert", alert_id=spike["id"]))["kind"] == "volume_spike"
        assert (await agent.ok("delete_alert", alert_id=move["id"]))["percent"] == 5

        placed = await agent.ok(
            "execute_trade",
            ticker=BTC,
            side="buy",
            quantity=1,
            order_type="limit",
            limit_price=90,
        )
        order = placed["order"]
        assert order["status"] == "open" and placed["fill"] is None
        rule_id = f"order-{order['id']}"
        assert mine()[rule_id] == OrderTrigger(
            order_id=order["id"], order_type="limit", side="buy", quantity=1, level=90
        )
        cancelled = await agent.ok(
            "execute_trade", ticker=BTC, side="buy", quantity=1, order_type="limit", limit_price=80
        )
        await agent.ok("cancel_order", order_id=cancelled["order"]["id"])
        assert f"order-{cancelled['order']['id']}" not in mine()
        assert "cannot sell" in await agent.refused(
            "execute_trade",
            ticker=BTC,
            side="sell",
            quantity=1,
            order_type="stop_loss",
            limit_price=80,
        )
        assert "limit_price" in await agent.refused(
            "execute_trade", ticker=BTC, side="buy", quantity=1, order_type="take_profit"
        )

        # the engine fired the order's rule: applied once, however often it comes
        (record,) = [r for r in rules.view.of(a_id) if r.rule.id == rule_id]
        fired = msgspec.json.encode(
            RuleFired(
                rule=record.rule, fired_at=record.rule.created_at + 5, price=89.0, fill_price=89.0
            )
        ).decode()
        # a person's own client (a personal access token) cannot fill orders it made up
        pat = mint_token(served.gw.keys, a_id, "pat")
        async with agent_session(endpoint.mcp_url, pat) as own_client:
            said = await own_client.refused("apply_rule_fired", fired=fired)
            assert "only the platform" in said
        applied = await agent.ok("apply_rule_fired", fired=fired)
        assert applied["order"]["status"] == "filled" and applied["fill"]["price"] == 89.0
        again = await agent.ok("apply_rule_fired", fired=fired)
        assert again["fill"] is None and again["order"]["status"] == "filled"
        account = await agent.ok("get_positions")
        assert [p["quantity"] for p in account["positions"]] == [1.0]
        assert account["open_orders"] == [] and rule_id not in mine()  # done: removed

        # a fired rule of another person, or not an order's, changes nothing
        bobs = msgspec.json.encode(
            RuleFired(rule=msgspec.structs.replace(record.rule, user="bob"), fired_at=1, price=1)
        ).decode()
        assert "another person" in await agent.refused("apply_rule_fired", fired=bobs)
        assert "not a fired rule" in await agent.refused("apply_rule_fired", fired="{}")

        # the hidden tool is offered to the platform, never to the model
        tools = {t.name: t for t in (await agent.client.list_tools()).tools}
        assert (tools["apply_rule_fired"].meta or {})["dexorder/traits"]["hidden"] is True

        deleted = await agent.ok("delete_alert", alert_id=alert["id"])
        assert deleted["id"] == alert["id"] and mine() == {}
        assert "no alert" in await agent.refused("delete_alert", alert_id=alert["id"])

        # an order whose rule has just fired is no longer cancellable: its fill is coming
        firing = await agent.ok(
            "execute_trade", ticker=BTC, side="buy", quantity=1, order_type="limit", limit_price=75
        )
        (fired_rule,) = [
            r.rule for r in rules.view.of(a_id) if r.rule.id == f"order-{firing['order']['id']}"
        ]
        await engine_fires(served, fired_rule)
        said = await agent.refused("cancel_order", order_id=firing["order"]["id"])
        assert "just been triggered" in said

        await agent.ok(
            "execute_trade", ticker=BTC, side="buy", quantity=1, order_type="limit", limit_price=70
        )
        await agent.ok("set_alert", ticker=BTC, condition="below", price=60)
    # an alert and a resting order, and nothing keeps the agent awake for them
    async with asyncio.timeout(10):
        while active_triggers(served.gw.cfg.agent_dir(a_id)) != 0:
            await asyncio.sleep(0.05)
    assert len(rules.view.of(a_id)) == 3  # the fired one stays until it is applied


async def test_what_an_agent_watched_itself_becomes_platform_rules(served: Served) -> None:
    """Alerts and resting orders made while the agent watched them itself (no platform to
    hand them to) become rules when it starts where the platform watches the market."""
    from agent.alerts import AlertBook
    from agent.broker.paper import PaperBook

    a_id = (await served.sign_up("alice@example.com"))["account"]["id"]
    state = served.gw.cfg.agent_dir(a_id) / "state"
    state.mkdir(parents=True, exist_ok=True)
    old_alert = AlertBook(state / "alerts.json").add(BTC, "below", 50)
    book = PaperBook()
    order, _ = book.place(BTC, "buy", 1, "limit", 40)
    (state / "paper.json").write_text(book.to_json())

    endpoint = await served.gw.provisioner.ensure(a_id, "free")
    rules = served.gw.rules
    assert rules is not None
    mine = {r.rule.id: r.rule.condition for r in rules.view.of(a_id)}
    assert mine == {
        f"alert-{old_alert.id}": PriceCross(direction="below", level=50),
        f"order-{order.id}": OrderTrigger(
            order_id=order.id, order_type="limit", side="buy", quantity=1, level=40
        ),
    }
    async with agent_session(endpoint.mcp_url, mint_token(served.gw.keys, a_id)) as agent:
        listed = await agent.ok("list_alerts")
    assert [a["id"] for a in listed["alerts"]] == [f"alert-{old_alert.id}"]
