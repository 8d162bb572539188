"""Threat: one person reads another's fired alerts and order triggers off the relay fanout.

The stream engine publishes every fired rule live on the relay's XPUB, and the fanout is
one for everyone: libzmq's proxy cannot filter per subscriber, and subscriptions are
prefixes. Every person's agent holds a subscriber key (``relay.curve_subscribers``), so
an agent (or the person's code in its sandbox) subscribing to ``RULE:`` gets every
firing. Fired rules therefore go out sealed (dexorder/rule_sealing.py): on ``RULE:{tag}``,
a keyed hash of the person, with the rule AES-GCM-sealed under ``relay.rule_seal_key``,
which only platform parts hold.

Here, on the real relay with CURVE subscribers on and the real stream runner
(``dexorder up``'s ``stream`` part) firing rules for alice and bob, an agent's subscriber
key subscribed to ``RULE:`` gets only sealed messages naming neither person nor the
rule's ticker, level or note, and cannot open them; the platform's own subscriber finds
alice's feed by her tag and reads it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from aiokafka import AIOKafkaProducer

from dexorder.config import Settings
from dexorder.contracts.rules import OrderTrigger, PriceCross, Rule, RuleRecord, encode_record
from dexorder.record_signing import record_keys, signed_record
from dexorder.relay_keys import SUBSCRIBER, connect_subscriber
from dexorder.rule_sealing import BrokenSeal, RuleSealer, new_secret
from dexorder.schemas import Tick, encode
from dexorder.tokens import new_keys
from dexorder.topics import MARKET_RULES, MARKET_TICKS, ohlc_topic
from gateway.agent_jail import agent_settings
from launcher.ephemeral import RunningPlatform, in_environment, start_platform

pytestmark = pytest.mark.integration

BTC = "BINANCE:BTC/USDT"
SECRET = new_secret()
#: people's ids (long enough that no random byte string holds one by chance)
ALICE, BOB = "alice-0001", "bob-0002"
ALICE_LEVEL, BOB_LEVEL = 70_105.125, 69_895.375
NOTES = {ALICE: "alice sells the house at this", BOB: "bob's margin call plan"}
#: what must not be in anything an outsider sees on the fanout
CLEAR = [ALICE, BOB, "BTC/USDT", "BINANCE", "70105.125", "69895.375", "a-alice", "o-bob"]
CLEAR_BYTES = [c.encode() for c in [*CLEAR, *NOTES.values()]]


@pytest.fixture
def sealed_platform(isolated_env: dict[str, str]) -> Iterator[RunningPlatform]:
    """Kafka, the relay with subscriber keys required (the cluster's switch), the stream
    runner with a configured seal secret, as in the cluster."""
    env = {
        **isolated_env,
        "DEXORDER_RELAY__CURVE_SUBSCRIBERS": "true",
        "DEXORDER_RELAY__RULE_SEAL_KEY": SECRET,
    }
    with in_environment(env):
        p = start_platform(env, {"kafka", "relay", "stream"})
        try:
            yield p
        finally:
            p.stop()


def rules(created_at: int) -> list[Rule]:
    alert = Rule(
        id="a-alice",
        user=ALICE,
        ticker=BTC,
        condition=PriceCross(direction="above", level=ALICE_LEVEL),
        created_at=created_at,
        note=NOTES[ALICE],
    )
    order = OrderTrigger(
        order_id="o-bob", order_type="limit", side="buy", quantity=1.5, level=BOB_LEVEL
    )
    limit = Rule(
        id="o-bob",
        user=BOB,
        ticker=BTC,
        condition=order,
        created_at=created_at,
        note=NOTES[BOB],
    )
    return [alert, limit]


def subscriber(cfg: Settings, *topics: bytes) -> zmq.asyncio.Socket:
    sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    connect_subscriber(sock, cfg)
    return sock


async def drain(sock: zmq.asyncio.Socket, into: list[tuple[bytes, bytes]]) -> None:
    while await sock.poll(0):
        topic, payload = await sock.recv_multipart()
        into.append((topic, payload))


async def test_an_agents_subscriber_key_reads_nobodys_fired_rules(
    sealed_platform: RunningPlatform, tmp_path: Path
) -> None:
    p = sealed_platform
    cfg = p.cfg
    assert cfg.relay.curve_subscribers
    # what a person's agent is configured with: the subscriber key, never the seal secret
    agent_cfg = agent_settings(cfg, new_keys().public_pem, tmp_path / "tokens.json")
    assert agent_cfg.relay.rule_seal_key is None and agent_cfg.relay.curve_subscribers
    candles = ohlc_topic(BTC, "1m").encode()
    outsider = subscriber(agent_cfg, b"RULE:", candles)  # every fired rule, if it could
    by_name = subscriber(agent_cfg, f"RULE:{ALICE}".encode(), f"RULE:{BOB}".encode(), candles)
    platform = RuleSealer.from_secret(SECRET)
    gateway = subscriber(cfg, platform.topic_for(ALICE).encode(), candles)
    keys = record_keys(cfg)
    producer = AIOKafkaProducer(bootstrap_servers=p.bootstrap, acks="all")
    await producer.start()
    seen: dict[str, list[tuple[bytes, bytes]]] = {"outsider": [], "by_name": [], "gateway": []}
    socks = {"outsider": outsider, "by_name": by_name, "gateway": gateway}
    poller = zmq.asyncio.Poller()
    for s in socks.values():
        poller.register(s, zmq.POLLIN)

    async def collect(timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for a message on any socket; take all there are."""
        if not await poller.poll(timeout_ms):
            return False
        for n, s in socks.items():
            await drain(s, seen[n])
        return True

    trade, base = 0, int(time.time() * 1000) - 3_600_000

    async def ticks(*prices: float) -> int:
        nonlocal trade
        for price in prices:
            trade += 1
            tick = Tick(
                exchange="BINANCE",
                symbol="BTC/USDT",
                trade_id=f"t{trade}",
                price=price,
                amount=0.5,
                ts=base + trade * 1_000,
            )
            await producer.send(MARKET_TICKS, encode(tick), key=BTC.encode())
        await producer.flush()
        return base + trade * 1_000

    def fired(name: str) -> list[tuple[bytes, bytes]]:
        return [(t, m) for t, m in seen[name] if t.startswith(b"RULE:")]

    try:
        # every subscriber is connected once candles reach it (the runner is live)
        deadline = time.monotonic() + 60
        while not all(any(t == candles for t, _ in seen[n]) for n in seen):
            assert time.monotonic() < deadline, "no candle reached every subscriber"
            last = await ticks(70_000.0)
            await collect(100)
        for r in rules(created_at=last + 1):
            value = encode_record(RuleRecord(rule=r))
            headers = signed_record(keys, MARKET_RULES, value)
            await producer.send_and_wait(MARKET_RULES, value, key=r.id.encode(), headers=headers)
        # cross both levels until both fired (the runner reads the rules as it reads ticks)
        deadline = time.monotonic() + 60
        while len(fired("outsider")) < 2 or not fired("gateway"):
            assert time.monotonic() < deadline, f"fired rules seen: {seen}"
            await ticks(ALICE_LEVEL + 10, BOB_LEVEL - 10)
            await collect(100)
        await ticks(ALICE_LEVEL + 20, BOB_LEVEL - 20)  # and a while more: nothing fires twice
        while await collect(300):
            pass
    finally:
        await producer.stop()
        for s in socks.values():
            s.close(linger=0)

    got = fired("outsider")
    assert len(got) == 2  # one firing each, both on the fanout
    topics = {t for t, _ in got}
    assert len(topics) == 2  # two people, two tags
    for topic, payload in got:
        assert [c for c in CLEAR_BYTES if c in topic + payload] == []
        # the agent's keys open nothing: not its subscriber key, not a guessed secret
        subscriber_key = (Path(cfg.home) / "state" / "relay" / f"{SUBSCRIBER}.key").read_text()
        for guess in (subscriber_key, new_secret()):
            with pytest.raises(BrokenSeal):
                RuleSealer.from_secret(guess).open(topic, payload)
    assert fired("by_name") == []  # a person's name on the fanout finds nothing
    # the platform's subscriber found alice's feed by her tag, and reads it
    (alices,) = fired("gateway")
    opened = platform.open(*alices)
    assert (opened.rule.id, opened.rule.user, opened.rule.note) == ("a-alice", ALICE, NOTES[ALICE])
    assert sorted(platform.open(t, m).rule.user for t, m in got) == [ALICE, BOB]
