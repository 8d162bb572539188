"""Two gateway replicas sharing one PostgreSQL database and one Redis: a person's critical
event reaches their WebSocket at whichever replica holds it, Telegram only when none
does, once per event id however many replicas it reaches (``gateway/replica_fanout.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as redis
import zmq
import zmq.asyncio

from dexorder.contracts.events import Notification
from dexorder.schemas import EventAck, UserEvent, decode, encode
from gateway.channels import Outbox
from gateway.platform_calls import platform_token
from gateway.replica_contracts import (
    DeliverAnswer,
    DeliverAsk,
    HeldWaiting,
    fanout_key,
    seal,
    unseal,
)
from gateway.replica_fanout import Here, Reach, gave_up, may_deliver, others, settled
from gateway.replica_redis import RedisReplicas
from tests.gateway.loopback_telegram import BOT_TOKEN, BotApiServer, serve_bot_api
from tests.gateway.served import Served, alert_event, gateway_settings, serve_gateway
from tests.postgres import fresh_database

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh accounts database on the running PostgreSQL, for this test only."""
    with fresh_database("dexorder_replicas") as url:
        yield url


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """This test's own corner of the shared Redis (parallel workers never meet)."""
    ns = f"test:{uuid.uuid4().hex[:10]}:"
    yield ns
    r = redis.from_url(REDIS_URL)
    try:
        async for key in r.scan_iter(match=f"{ns}*"):
            await r.delete(key)
    finally:
        await r.aclose()


@pytest.fixture
async def bot() -> AsyncIterator[tuple[str, BotApiServer]]:
    async with serve_bot_api() as served:
        yield served


@pytest.fixture
async def replicas(
    tmp_path: Path, database_url: str, namespace: str, bot: tuple[str, BotApiServer]
) -> AsyncIterator[tuple[Served, Served]]:
    """Replicas A and B: one home (one agent-token key, as in a cluster's Secret), one
    database, one Redis, one Telegram bot; each its own HTTP and event ports."""
    shared: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "redis_prefix": namespace,
        "session_secret": "replica-test-session-secret-" + "x" * 32,
        "telegram_bot_token": BOT_TOKEN,
        "telegram_api_url": bot[0],
        # generous: on a loaded machine the asked replica may take a while to answer, and
        # giving up sends it to Telegram (the path test_a_silent_replica_* takes on purpose)
        "replica_answer_s": 10.0,
    }
    home = tmp_path / "home"
    async with (
        serve_gateway(gateway_settings(home, **shared)) as a,
        serve_gateway(gateway_settings(home, **shared)) as b,
    ):
        yield a, b


@contextlib.contextmanager
def agent_dealer(replica: Served) -> Iterator[zmq.asyncio.Socket]:
    """A DEALER as an agent's, connected to ``replica``'s event ROUTER."""
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(replica.gw.cfg.gateway.events_address)
    try:
        yield dealer
    finally:
        dealer.close()


async def acked(dealer: zmq.asyncio.Socket, timeout_s: float = 20) -> str:
    """The event id of the next acknowledgement the dealer gets."""
    assert await dealer.poll(int(timeout_s * 1000)), "no acknowledgement"
    ack = decode(await dealer.recv())
    assert isinstance(ack, EventAck)
    return ack.event_id


async def until(check: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def settled_at(stats: dict[str, int]) -> bool:
    """The router has done with the event one way or another."""
    return bool(stats["delivered"] + stats["duplicates"] + stats["claimed_elsewhere"])


async def person(a: Served) -> tuple[str, str]:
    """A signed-up person: their account id and access token."""
    body = await a.sign_up(f"{uuid.uuid4().hex[:8]}@example.com")
    return body["account"]["id"], body["access_token"]


def link_telegram(s: Served, user: str, telegram_user: int) -> None:
    s.gw.accounts.redeem_link_code(s.gw.accounts.telegram_link_code(user), telegram_user)


async def test_an_event_reaching_a_goes_to_the_socket_on_b_not_to_telegram(
    replicas: tuple[Served, Served], bot: tuple[str, BotApiServer]
) -> None:
    a, b = replicas
    user, token = await person(a)
    link_telegram(a, user, 4242)  # Telegram is there, but their socket comes first
    async with b.socket(token) as sock:
        assert not a.gw.hub.online(user) and b.gw.hub.online(user)
        with agent_dealer(a) as dealer:
            await dealer.send(encode(alert_event(a.gw, user, "ev-1", ticker="BTC")))
            assert await acked(dealer) == "ev-1"
        frame = await sock.until("event")
        assert frame["event_id"] == "ev-1" and frame["kind"] == "alert"
    # acknowledged only after delivery, and Telegram is tried only instead of a socket
    assert bot[1].calls == []
    assert a.gw.events.stats["delivered"] == 1
    assert b.gw.hub.replicas.stats["answered"] == 1  # type: ignore[attr-defined]


async def test_with_no_socket_anywhere_it_goes_to_telegram_once(
    replicas: tuple[Served, Served], bot: tuple[str, BotApiServer]
) -> None:
    a, b = replicas
    user, _ = await person(a)
    link_telegram(a, user, 5151)
    event = alert_event(a.gw, user, "ev-tg", ticker="ETH", condition="above", price=3000)
    with agent_dealer(a) as to_a, agent_dealer(b) as to_b:
        await to_a.send(encode(event))
        assert await acked(to_a) == "ev-tg"
        await to_b.send(encode(event))  # the agent re-sends it, to the other replica
        assert await acked(to_b) == "ev-tg"
    sent = bot[1].sent()
    assert len(sent) == 1 and sent[0]["chat_id"] == 5151 and "ETH" in sent[0]["text"]
    assert b.gw.events.stats["duplicates"] == 1 and b.gw.events.stats["delivered"] == 0


async def test_the_same_event_sent_to_a_and_to_b_is_delivered_once(
    replicas: tuple[Served, Served], bot: tuple[str, BotApiServer]
) -> None:
    a, b = replicas
    user, token = await person(a)
    event = alert_event(a.gw, user, "ev-twice", ticker="SOL")
    async with b.socket(token) as sock:
        with agent_dealer(a) as to_a, agent_dealer(b) as to_b:
            await asyncio.gather(to_a.send(encode(event)), to_b.send(encode(event)))
            first = await sock.until("event")
            assert first["event_id"] == "ev-twice"
            # the replica that claimed it delivers, records and then acknowledges it
            poller = zmq.asyncio.Poller()
            poller.register(to_a, zmq.POLLIN)
            poller.register(to_b, zmq.POLLIN)
            ready = dict(await poller.poll(20_000))
            assert ready, "neither replica acknowledged it"
            winner = to_a if to_a in ready else to_b
            assert await acked(winner) == "ev-twice"
            # the other found it delivered (acknowledged), or claimed by the winner (not
            # yet: the agent sends it again, and now it is found delivered)
            loser, to_loser = (b, to_b) if winner is to_a else (a, to_a)
            stats = loser.gw.events.stats
            await until(lambda: settled_at(stats))
            if not stats["duplicates"]:
                assert stats["claimed_elsewhere"] == 1
                await to_loser.send(encode(event))
            assert await acked(to_loser) == "ev-twice"
            # everything for ev-twice was written before its acks: the next frame is new
            with agent_dealer(a) as dealer:
                await dealer.send(encode(alert_event(a.gw, user, "ev-after", ticker="SOL")))
                assert await acked(dealer) == "ev-after"
            assert (await sock.until("event"))["event_id"] == "ev-after"
    delivered = a.gw.events.stats["delivered"] + b.gw.events.stats["delivered"]
    assert delivered == 2  # ev-twice once (by A or by B), ev-after once
    assert bot[1].calls == []


async def test_a_socket_on_b_closing_mid_delivery_leaves_it_unacknowledged_until_it_comes_again(
    replicas: tuple[Served, Served], bot: tuple[str, BotApiServer]
) -> None:
    a, b = replicas
    user, token = await person(a)  # no Telegram: the socket was their only channel

    async def closing(frame: Any) -> None:
        """B's socket of theirs, closing just as the event is written to it."""
        await b.gw.hub.detach(user, closing)
        raise ConnectionResetError("the WebSocket closed while it was written to")

    outbox: Outbox = closing
    await b.gw.hub.attach(user, outbox)
    event = alert_event(a.gw, user, "ev-lost", ticker="XRP")
    with agent_dealer(a) as dealer:
        await dealer.send(encode(event))
        await until(lambda: a.gw.events.stats["undelivered"] == 1)
        # not acknowledged: it stays in the agent's outbox (poll gives the event mask; pyzmq's
        # _future.pyi types a socket's poll as a Poller's list of pairs, so no ``== 0``)
        assert not await dealer.poll(0)
        assert b.gw.hub.replicas.stats["answered"] == 1  # type: ignore[attr-defined]
        async with b.socket(token) as sock:  # they come back; the agent sends it again
            await dealer.send(encode(event))
            assert await acked(dealer) == "ev-lost"
            assert (await sock.until("event"))["event_id"] == "ev-lost"
    assert bot[1].calls == []
    assert a.gw.events.stats["delivered"] == 1


async def test_a_notification_reaching_a_goes_to_the_socket_on_b(
    replicas: tuple[Served, Served], bot: tuple[str, BotApiServer]
) -> None:
    a, b = replicas
    user, token = await person(a)
    async with b.socket(token) as sock:
        body = {"event_id": "n-1", "user": user, "kind": "alert", "payload": {"ticker": "ADA"}}
        status, answer = await a.post("/internal/notify", body, token=platform_token(a.gw.keys))
        assert (status, answer) == (200, {"delivered": "n-1"})
        assert (await sock.until("event"))["event_id"] == "n-1"
    assert a.gw.held.count(user) == 0 and bot[1].calls == []


async def test_a_notification_held_at_a_is_delivered_by_b_at_once(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    user, token = await person(a)
    async with b.socket(token) as sock:
        # held at A (as when it found no socket while they were connecting to B): B is
        # told, and delivers what is held without waiting for its sweep
        note = Notification(event_id="n-held", user=user, kind="alert", payload={"t": "DOT"})
        assert await a.gw.hold_notification(note)
        assert (await sock.until("event"))["event_id"] == "n-held"
        await until(lambda: a.gw.held.count(user) == 0)
    assert b.gw.hub.replicas.stats["held_woken"] == 1  # type: ignore[attr-defined]


async def test_a_slow_replica_is_waited_for_and_a_silent_one_given_up_for_telegram(
    namespace: str,
) -> None:
    """The asker's wait runs out: an asked replica that already took the event for its
    socket is waited for (no Telegram as well); one that had not is given up on, and if it
    wakes later it does not write the event (it went to Telegram)."""
    key = fanout_key("secret")
    a = RedisReplicas(REDIS_URL, namespace, key, answer_s=0.2, replica_id="a")
    b = RedisReplicas(REDIS_URL, namespace, key, answer_s=0.2, replica_id="b")
    written: list[UserEvent] = []
    marked: list[UserEvent] = []
    writing = asyncio.Event()

    async def slow_socket(event: UserEvent) -> bool:
        await writing.wait()
        written.append(event)
        return True

    async def mark(event: UserEvent) -> None:
        marked.append(event)

    async def nothing_held(user: str) -> int:
        return 0

    here_b = Here(lambda u: u == "u", lambda: ["u"], slow_socket, mark, nothing_held)
    here_a = Here(lambda u: False, lambda: [], slow_socket, mark, nothing_held)
    await a.start(here_a)
    await b.start(here_b)
    silent = b.redis.pubsub()
    try:
        await b.present("u")
        event = UserEvent(event_id="e-1", user="u", kind="fill", critical=True, auth="tok")
        asking = asyncio.create_task(a.ask(event))
        await until(lambda: a.stats["late"] == 1)  # its wait ran out; B had taken it
        writing.set()
        assert await asking is Reach.DELIVERED
        assert [e.event_id for e in written] == ["e-1"] and marked == written
        assert written[0].auth == ""  # the agent's token never left the receiving replica

        # now only a replica that listens and never answers holds a socket of theirs
        await b.absent("u")
        await silent.subscribe(f"{namespace}replicas:to:hung")
        far = int(time.time() * 1000) + 60_000
        await b.redis.zadd(f"{namespace}replicas:presence:u", {"hung": far})
        later = msgspec.structs.replace(event, event_id="e-2")
        assert await a.ask(later) is Reach.NOBODY  # after answer_s: Telegram
        got = None
        while got is None or got["type"] != "message":
            got = await silent.get_message(timeout=5)
        envelope = unseal(key, got["data"], int(time.time() * 1000))
        assert envelope is not None and isinstance(envelope.message, DeliverAsk)
        await b._serve(envelope.message)  # the hung replica wakes: too late to write
        assert [e.event_id for e in written] == ["e-1"]
    finally:
        await silent.aclose()
        await a.close()
        await b.close()


# --- the pure parts ------------------------------------------------------------------------


def test_decisions() -> None:
    assert others(["a", "b", "c"], "a") == {"b", "c"}
    both = frozenset({"b", "c"})
    assert settled(both, {}) is None
    assert settled(both, {"b": False}) is None
    assert settled(both, {"b": False, "c": True}) is Reach.DELIVERED
    assert settled(both, {"c": True}) is Reach.DELIVERED  # no need to wait for b
    assert settled(both, {"b": False, "c": False}) is Reach.NOBODY
    # an asked replica writes unless the asker gave up; the asker gives up only if first
    assert may_deliver(None) and may_deliver("sockets") and not may_deliver("telegram")
    assert gave_up(None) and not gave_up("sockets")


def test_seals() -> None:
    key = fanout_key("secret")
    raw = seal(key, "r1", HeldWaiting(user="u"), now_ms=1_000_000)
    envelope = unseal(key, raw, now_ms=1_000_500)
    assert envelope is not None and envelope.message == HeldWaiting(user="u")
    assert envelope.sender == "r1"
    assert unseal(fanout_key("other"), raw, now_ms=1_000_500) is None  # not a replica's
    assert unseal(key, raw, now_ms=1_000_000 + 61_000) is None  # replayed later
    assert unseal(key, b"\x00junk", now_ms=1_000_000) is None
    forged = seal(
        fanout_key("other"), "r2", DeliverAnswer(ask_id="x", replica="r2", delivered=True), 1
    )
    assert unseal(key, forged, now_ms=1) is None
