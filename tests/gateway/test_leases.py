"""Leases (functions/gateway/leases.py) on the running Redis and in process: one holder at
a time per key, renewed while held, and a holder that stops renewing (a dead replica)
lets the next one in after the lease; a holder whose lease is lost (it stalled past it)
is stopped with LeaseLost, while a cancellation from outside stays one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.leases import LeaseLost, Leases, LocalLeases, RedisLeases, check_held

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["local", "redis"])
async def leases(request: pytest.FixtureRequest) -> AsyncIterator[Leases]:
    found: Leases = (
        LocalLeases()
        if request.param == "local"
        else RedisLeases(REDIS_URL, f"test:{uuid.uuid4().hex[:8]}:", lease_s=0.6)
    )
    yield found
    await found.close()


async def test_holders_of_one_key_take_turns_and_other_keys_are_free(leases: Leases) -> None:
    inside: dict[str, list[str]] = {"turn:alice": [], "turn:bob": []}
    order: list[tuple[str, str]] = []
    first_in = asyncio.Event()
    let_go = asyncio.Event()

    async def hold(name: str, key: str, wait: asyncio.Event | None = None) -> None:
        async with leases.hold(key):
            inside[key].append(name)
            order.append((name, "in"))
            if name == "a":
                first_in.set()
            if wait is not None:
                await wait.wait()
            # past a renewal or two of the lease (0.6 s): still the only holder
            assert inside[key] == [name]
            inside[key].remove(name)
            order.append((name, "out"))

    a = asyncio.create_task(hold("a", "turn:alice", let_go))
    await first_in.wait()
    b = asyncio.create_task(hold("b", "turn:alice"))
    await hold("c", "turn:bob")  # another person's turn does not wait for alice's
    await asyncio.sleep(1.0)  # longer than the lease: a held lease is renewed, not lost
    assert not b.done()
    let_go.set()
    await asyncio.gather(a, b)
    assert order == [
        ("a", "in"),
        ("c", "in"),
        ("c", "out"),
        ("a", "out"),
        ("b", "in"),
        ("b", "out"),
    ]


async def test_a_lease_nobody_renews_expires_and_the_next_holder_goes_on() -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    leases = RedisLeases(REDIS_URL, prefix, lease_s=0.5)
    client = redis.from_url(REDIS_URL)
    try:
        # a replica that took alice's turn and died: its key, never renewed or released
        await client.set(f"{prefix}lease:turn:alice", "dead-replica-token", px=500)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with asyncio.timeout(10), leases.hold("turn:alice"):
            waited = loop.time() - t0
            assert await client.get(f"{prefix}lease:turn:alice") != b"dead-replica-token"
        assert 0.2 < waited < 5
        assert await client.exists(f"{prefix}lease:turn:alice") == 0  # released
    finally:
        await client.aclose()
        await leases.close()


async def _held_until_cancelled(leases: Leases, key: str, inside: asyncio.Event) -> None:
    async with leases.hold(key):
        inside.set()
        await asyncio.Event().wait()  # works until stopped


async def test_a_holder_whose_lease_another_replica_took_is_cancelled_with_lease_lost() -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    stalled = RedisLeases(REDIS_URL, prefix, lease_s=0.6)
    other = RedisLeases(REDIS_URL, prefix, lease_s=30)
    client = redis.from_url(REDIS_URL)
    try:
        inside = asyncio.Event()
        holder = asyncio.create_task(_held_until_cancelled(stalled, "turn:alice", inside))
        await inside.wait()
        # its lease ran out (as if the replica stalled) and another replica took it
        await client.delete(f"{prefix}lease:turn:alice")
        async with asyncio.timeout(10), other.hold("turn:alice"):
            with pytest.raises(LeaseLost) as lost:
                await holder  # stopped at its next renewal, a third of the lease away
            assert lost.value.key == "turn:alice"
            assert isinstance(lost.value.__cause__, asyncio.CancelledError)
            assert holder.cancelling() == 0  # our cancellation taken back (uncancel)
            # the stalled one released nothing of the new holder's
            assert await client.exists(f"{prefix}lease:turn:alice") == 1
    finally:
        await client.aclose()
        await stalled.close()
        await other.close()


async def test_a_stalled_holder_is_stopped_before_any_side_effect_without_asking_redis() -> None:
    leases = RedisLeases(REDIS_URL, f"test:{uuid.uuid4().hex[:8]}:", lease_s=0.3)
    effects: list[str] = []
    try:
        with pytest.raises(LeaseLost):
            async with leases.hold("turn:alice"):
                check_held()  # in time: nothing to say
                effects.append("before the stall")
                # the whole process stalls past the lease (as under SIGSTOP): no task runs,
                # no renewal; what the block does next is refused by the clock alone
                time.sleep(0.4)
                check_held()
                effects.append("after the stall")
        assert effects == ["before the stall"]
        check_held()  # outside any hold: nothing held, nothing to lose
    finally:
        await leases.close()


async def test_a_cancellation_from_outside_stays_a_cancellation(leases: Leases) -> None:
    inside = asyncio.Event()
    holder = asyncio.create_task(_held_until_cancelled(leases, "turn:alice", inside))
    await inside.wait()
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    # and the key is free again at once
    async with asyncio.timeout(5), leases.hold("turn:alice"):
        pass


async def test_an_outside_cancellation_during_a_lost_lease_is_not_swallowed() -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    leases = RedisLeases(REDIS_URL, prefix, lease_s=0.6)
    client = redis.from_url(REDIS_URL)
    stopped = asyncio.Event()

    async def hold() -> None:
        async with leases.hold("turn:alice"):
            await client.delete(f"{prefix}lease:turn:alice")  # lost at the next renewal
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                # the lease's cancellation has come; one from outside comes at the same
                # moment (the server shutting down, say): that one must win
                me = asyncio.current_task()
                assert me is not None
                me.cancel()
                stopped.set()
                raise

    try:
        holder = asyncio.create_task(hold())
        async with asyncio.timeout(10):
            await stopped.wait()
            with pytest.raises(asyncio.CancelledError):
                await holder
        assert holder.cancelled()
    finally:
        await client.aclose()
        await leases.close()
