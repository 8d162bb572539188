"""Leases (functions/gateway/leases.py) on the running Redis and in process: one holder at
a time per key, renewed while held, and a holder that stops renewing (a dead replica)
lets the next one in after the lease."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.leases import Leases, LocalLeases, RedisLeases

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
