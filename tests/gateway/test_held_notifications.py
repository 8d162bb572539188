"""Notifications for a person none of whose channels is reachable: held in the accounts
database (202), delivered once, in order, when they next open a chat, removed with their
account, and at most ``cap`` of them per person."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from dexorder.contracts.events import Notification
from dexorder.schemas import UserEvent
from gateway.accounts.store import Accounts
from gateway.events import DeliveredEvents
from gateway.held import HeldNotifications, UnknownPerson, deliver_held
from gateway.platform_calls import platform_token
from tests.gateway.served import Served, gateway_settings, serve_gateway


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


async def notify(s: Served, user: str, event_id: str, **payload: Any) -> tuple[int, Any]:
    body = {"event_id": event_id, "user": user, "kind": "alert", "payload": payload}
    return await s.post("/internal/notify", body, token=platform_token(s.gw.keys))


async def drained(s: Served, user: str) -> None:
    """Until nothing is held for ``user`` (each is removed just after it is sent)."""
    async with asyncio.timeout(10):
        while s.gw.held.count(user):
            await asyncio.sleep(0.02)


@pytest.mark.integration
async def test_a_notification_for_someone_away_is_held_and_reaches_them_once(
    served: Served,
) -> None:
    bob = await served.sign_up("bob@example.com")
    b_id = bob["account"]["id"]
    assert await notify(served, b_id, "n-1", ticker="A") == (202, {"held": "n-1"})
    assert await notify(served, b_id, "n-2", ticker="B") == (202, {"held": "n-2"})
    assert await notify(served, b_id, "n-1", ticker="A") == (202, {"held": "n-1"})  # again
    assert served.gw.held.count(b_id) == 2

    async with served.socket(bob["access_token"]) as ws:
        first, second = await ws.until("event"), await ws.until("event")
        assert [first["event_id"], second["event_id"]] == ["n-1", "n-2"]  # in order
        assert first["payload"] == {"ticker": "A"}
        with pytest.raises(TimeoutError):
            await ws.until("event", timeout=0.5)  # the duplicate was held once
    await drained(served, b_id)
    async with served.socket(bob["access_token"]) as ws:  # a second connect: nothing again
        with pytest.raises(TimeoutError):
            await ws.until("event", timeout=0.5)
    # the same event id redelivered after it reached him: done, not held again
    assert await notify(served, b_id, "n-1", ticker="A") == (200, {"delivered": "n-1"})
    assert served.gw.held.count(b_id) == 0
    assert served.gw.held.stats == {"held": 2, "duplicates": 1, "dropped": 0, "delivered": 2}
    _, health = await served.get("/healthz")
    assert health["notifications_held"] == 2 and health["notifications_dropped"] == 0

    # while he is connected a notification goes straight to him
    async with served.socket(bob["access_token"]) as ws:
        assert await notify(served, b_id, "n-3") == (200, {"delivered": "n-3"})
        assert (await ws.until("event"))["event_id"] == "n-3"

    status, body = await notify(served, "u-nobody", "n-4")
    assert status == 404 and "no such account" in body["error"]
    status, body = await notify(served, b_id, "n" * 65)
    assert status == 413 and "event_id" in body["error"]


@pytest.mark.integration
async def test_deleting_my_account_removes_what_is_held_for_me(served: Served) -> None:
    alice = await served.sign_up("alice@example.com")
    bob = await served.sign_up("bob@example.com")
    a_id, b_id = alice["account"]["id"], bob["account"]["id"]
    for i in range(3):
        assert (await notify(served, a_id, f"a-{i}"))[0] == 202
    assert (await notify(served, b_id, "b-0"))[0] == 202
    status, _ = await served.delete("/api/me", token=alice["access_token"])
    assert status == 200
    assert served.gw.held.count(a_id) == 0
    assert served.gw.held.count(b_id) == 1  # bob's are his


def note(user: str, event_id: str) -> Notification:
    return Notification(event_id=event_id, user=user, kind="alert", payload={"n": event_id})


def test_beyond_the_cap_the_oldest_are_dropped(engine: Engine) -> None:
    person = Accounts(engine).sign_up("carol@example.com", "correct horse battery")
    held = HeldNotifications(engine, cap=3)
    for i in range(5):
        assert held.hold(note(person.id, f"c-{i}"))
    assert not held.hold(note(person.id, "c-4"))  # held already: nothing changes
    assert held.count(person.id) == 3
    assert held.stats == {"held": 5, "duplicates": 1, "dropped": 2, "delivered": 0}
    kept = [held.claim(seq) for seq in held.waiting(person.id)]
    assert [n.event_id for n in kept if n is not None] == ["c-2", "c-3", "c-4"]
    with pytest.raises(UnknownPerson):
        held.hold(note("u-nobody", "x-1"))


def test_one_gateway_at_a_time_delivers_a_held_notification(engine: Engine) -> None:
    person = Accounts(engine).sign_up("dan@example.com", "correct horse battery")
    held = HeldNotifications(engine)
    held.hold(note(person.id, "d-1"))
    (seq,) = held.waiting(person.id)
    claimed = held.claim(seq)
    assert claimed is not None and claimed.payload == {"n": "d-1"}
    assert held.claim(seq) is None  # another gateway is delivering it
    held.unclaim(seq)
    assert held.claim(seq) is not None  # given up: free again


async def test_a_failed_delivery_leaves_it_and_the_rest_held(engine: Engine) -> None:
    person = Accounts(engine).sign_up("erin@example.com", "correct horse battery")
    held, delivered = HeldNotifications(engine), DeliveredEvents(engine)
    for i in range(3):
        held.hold(note(person.id, f"e-{i}"))
    got: list[str] = []

    async def flaky(event: UserEvent) -> bool:  # the person's channel drops after one
        if got:
            return False
        got.append(event.event_id)
        return True

    assert await deliver_held(held, delivered, flaky, person.id) == 1
    assert got == ["e-0"] and delivered.seen("e-0") and not delivered.seen("e-1")
    assert held.count(person.id) == 2

    async def channel(event: UserEvent) -> bool:
        got.append(event.event_id)
        return True

    assert await deliver_held(held, delivered, channel, person.id) == 2  # e-1 not claimed
    assert got == ["e-0", "e-1", "e-2"] and held.count(person.id) == 0


@pytest.mark.integration
async def test_what_another_replica_held_reaches_a_person_connected_here(served: Served) -> None:
    bob = await served.sign_up("bob@example.com")
    b_id = bob["account"]["id"]
    async with served.socket(bob["access_token"]) as ws:
        # held by a replica without his WebSocket, in the database they share
        assert served.gw.held.hold(note(b_id, "r-1"))
        frame = await ws.until("event", timeout=30)  # this gateway's sweep finds it
        assert frame["event_id"] == "r-1" and frame["payload"] == {"n": "r-1"}
    await drained(served, b_id)
