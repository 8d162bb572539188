"""People's market rules through the local stream runner, on the real broker: a rule on
``market.rules`` fires once on the ticks crossing it (a signed notification, the rule
written back fired, an order's ``rules.fired``, the person's sealed relay topic), a deleted
or unsigned rule does not, and neither a restart nor a replay from an older checkpoint
fires it again."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from dexorder.contracts.events import Notification
from dexorder.contracts.rules import (
    BadRule,
    OrderTrigger,
    PriceCross,
    Rule,
    RuleRecord,
    decode_fired,
    decode_record,
    encode_record,
)
from dexorder.kafka import ensure_topics
from dexorder.record_signing import record_keys, signed_record, verify_record
from dexorder.relay_keys import connect_subscriber, publisher
from dexorder.rule_sealing import rule_sealer
from dexorder.schemas import Tick, encode
from dexorder.topics import MARKET_RULES, MARKET_TICKS, NOTIFICATIONS, RULES_FIRED
from launcher.ephemeral import RunningPlatform, start_platform
from streaming.runner import StreamRunner

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
BTC = "BINANCE:BTC/USDT"


def alert(rule_id: str, level: float, user: str = "alice", created_at: int = T0) -> Rule:
    return Rule(
        id=rule_id,
        user=user,
        ticker=BTC,
        condition=PriceCross(direction="above", level=level),
        created_at=created_at,
    )


def buy_limit(rule_id: str, level: float, user: str = "bob") -> Rule:
    cond = OrderTrigger(order_id=rule_id, order_type="limit", side="buy", quantity=2, level=level)
    return Rule(id=rule_id, user=user, ticker=BTC, condition=cond, created_at=T0)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` now."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        while any([await reader.position(tp) < ends[tp] for tp in tps]):
            for records in (await reader.getmany(timeout_ms=500)).values():
                out.extend(records)
        return out
    finally:
        await reader.stop()


class Harness:
    """The broker and the relay (real), a producer, a subscriber to people's fired-rule
    topics, and the runner started and stopped in this process."""

    def __init__(self, p: RunningPlatform, state_dir: Path) -> None:
        self.bootstrap, self.state_dir, self.keys = p.bootstrap, state_dir, record_keys(p.cfg)
        self.publisher = publisher(p.cfg, "stream")
        self.sealer = rule_sealer(p.cfg)
        self.sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
        connect_subscriber(self.sub, p.cfg)
        self.sub.subscribe(b"RULE:")
        self.producer = AIOKafkaProducer(bootstrap_servers=p.bootstrap, acks="all")
        self.runner: StreamRunner | None = None
        self.task: asyncio.Task[None] | None = None
        self.trade = 0

    async def start(self) -> StreamRunner:
        runner = self.runner = StreamRunner(
            bootstrap=self.bootstrap,
            relay_xsub=self.publisher,
            state_dir=self.state_dir,
            checkpoint_interval_ms=100,
            record_keys=self.keys,
            rule_sealer=self.sealer,
        )
        self.task = asyncio.create_task(runner.run())

        async def ready() -> bool:
            assert self.task is not None
            if self.task.done():
                self.task.result()  # the runner failed: say why
            return runner.ready

        await until(ready, "the runner to be ready")
        return runner

    async def stop(self) -> None:
        assert self.runner is not None and self.task is not None
        self.runner.stop()
        await self.task

    async def put(self, rule: Rule, *, signed: bool = True) -> None:
        value = encode_record(RuleRecord(rule=rule))
        headers = signed_record(self.keys, MARKET_RULES, value) if signed else []
        await self.producer.send_and_wait(
            MARKET_RULES, value, key=rule.id.encode(), headers=headers
        )

    async def delete(self, rule_id: str) -> None:
        headers = signed_record(self.keys, MARKET_RULES, b"")
        await self.producer.send_and_wait(MARKET_RULES, None, key=rule_id.encode(), headers=headers)

    async def ticks(self, *prices: float) -> None:
        for price in prices:
            self.trade += 1
            tick = Tick(
                exchange="BINANCE",
                symbol="BTC/USDT",
                trade_id=str(self.trade),
                price=price,
                amount=1.0,
                ts=T0 + self.trade * 1_000,
            )
            await self.producer.send(MARKET_TICKS, encode(tick), key=BTC.encode())
        await self.producer.flush()

    async def notifications(self) -> list[Notification]:
        out = []
        for r in await read_topic(self.bootstrap, NOTIFICATIONS):
            verify_record(self.keys, NOTIFICATIONS, r.value, r.headers)
            out.append(msgspec.json.decode(r.value, type=Notification))
        return out

    async def notified(self, event_ids: set[str]) -> None:
        async def seen() -> bool:
            return {n.event_id for n in await self.notifications()} >= event_ids

        await until(seen, f"notifications {sorted(event_ids)}")


async def test_rules_fire_once_through_restarts_and_replays(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    p = start_platform(isolated_env, only={"kafka", "relay"})
    kafka = p.bootstrap
    await ensure_topics(kafka)
    h = Harness(p, tmp_path / "stream")
    keys = h.keys
    h.state_dir.mkdir()
    await h.producer.start()
    try:
        await h.put(alert("a-up", 105.0))
        await h.put(buy_limit("o-1", 95.0))
        await h.put(alert("a-deleted", 105.0))
        await h.delete("a-deleted")
        await h.put(alert("a-forged", 105.0, user="mallory"), signed=False)
        await h.producer.send_and_wait(
            MARKET_RULES,
            b'{"rule": "nonsense"}',
            key=b"junk",
            headers=signed_record(keys, MARKET_RULES, b'{"rule": "nonsense"}'),
        )
        runner = await h.start()
        health = runner.health()
        assert health["rules"] == 2  # a-up and o-1
        assert health["rule_records_dropped"] == {"unsigned": 1, "not a rule": 1}

        # ticks that cross nothing, then a checkpoint of that moment is kept aside
        await h.ticks(100.0, 101.0)
        checkpoint = h.state_dir / "checkpoint.msgpack"

        async def checkpointed() -> bool:
            return runner.counters["ticks"] >= 2 and checkpoint.exists()

        await until(checkpointed, "the first checkpoint")
        await h.stop()  # a clean stop: its checkpoint holds both ticks
        shutil.copy(checkpoint, tmp_path / "before-firing.msgpack")
        runner = await h.start()

        await h.ticks(106.0, 94.0, 107.0)  # crosses a-up, then o-1; 107 crosses a-up again
        await h.notified({"rule:a-up", "rule:o-1"})
        # a rule created after the ticks so far (event time) fires only on a later one
        await h.put(alert("a-late", 50.0, user="carol", created_at=T0 + 5_500))

        async def late_read() -> bool:
            return runner.health()["rules"] == 1

        await until(late_read, "a-late to be read")
        await h.stop()

        # restarted from its checkpoint: nothing fires again, the new rule still can
        runner = await h.start()
        assert runner.health()["rules"] == 1
        await h.ticks(108.0, 93.0)
        await h.notified({"rule:a-late"})
        await h.stop()

        # a crash that lost the checkpoints after the firing: the ticks are read again
        # from before it, but market.rules says the rules fired
        shutil.copy(tmp_path / "before-firing.msgpack", checkpoint)
        runner = await h.start()
        assert runner.health()["rules"] == 0

        async def replayed() -> bool:
            return runner.counters["ticks"] >= 5

        await until(replayed, "the replay")
        await h.stop()

        notes = await h.notifications()  # every one signed (verified while reading)
        assert sorted(n.event_id for n in notes) == ["rule:a-late", "rule:a-up", "rule:o-1"]
        by_id = {n.event_id: n for n in notes}
        assert (by_id["rule:a-up"].user, by_id["rule:a-up"].kind) == ("alice", "alert")
        assert (by_id["rule:o-1"].user, by_id["rule:o-1"].kind) == ("bob", "order_triggered")
        fired_up = decode_fired(msgspec.json.encode(by_id["rule:a-up"].payload))
        assert (fired_up.price, fired_up.fired_at) == (106.0, T0 + 3_000)
        assert by_id["rule:a-late"].payload["price"] == 108.0

        # the order also went to rules.fired, keyed by its person, signed
        orders = await read_topic(kafka, RULES_FIRED)
        assert len(orders) == 1 and orders[0].key == b"bob"
        verify_record(keys, RULES_FIRED, orders[0].value, orders[0].headers)
        assert decode_fired(orders[0].value).fill_price == 94.0

        # every firing written back to market.rules, once, signed
        written = [r for r in await read_topic(kafka, MARKET_RULES) if _fired(r.value)]
        assert sorted(r.key for r in written) == [b"a-late", b"a-up", b"o-1"]
        for r in written:
            verify_record(keys, MARKET_RULES, r.value, r.headers)

        # and the relay was told, sealed on each person's topic
        got: list[tuple[str, str]] = []
        while len(got) < 3:
            topic, data = await asyncio.wait_for(h.sub.recv_multipart(), 5)
            got.append((topic.decode(), h.sealer.open(topic, data).rule.id))
        assert sorted(got) == sorted(
            [
                (h.sealer.topic_for("alice"), "a-up"),
                (h.sealer.topic_for("bob"), "o-1"),
                (h.sealer.topic_for("carol"), "a-late"),
            ]
        )
        with pytest.raises(TimeoutError):  # and nothing more
            await asyncio.wait_for(h.sub.recv_multipart(), 0.3)
    finally:
        if h.task is not None and not h.task.done():
            await h.stop()
        await h.producer.stop()
        h.sub.close()
        p.stop()


def _fired(value: bytes | None) -> bool:
    """Whether a ``market.rules`` value is a rule written back fired."""
    try:
        return value is not None and decode_record(value).fired is not None
    except BadRule:
        return False  # the junk record of the test
