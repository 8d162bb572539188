"""Leases: one holder at a time per key, across every gateway replica.

A person's turns run one after the other whichever replica receives them (key
``turn:<user>``), and two replicas receiving a person's first message at once start one
agent (``agent:<user>``, the provisioners'). With ``gateway.redis_url`` set a hold is
redis-py's :class:`redis.asyncio.lock.Lock` (``SET NX PX`` with a random token; released
and extended by Lua scripts that check the token) with a lease of
``gateway.turn_lease_s``, renewed by its holder every third of the lease while it works.
A replica that dies (SIGKILL, a lost node) renews no more: the key expires after the
lease and the next waiting replica goes on, so nobody is locked out for longer than that.
Without Redis (``dexorder up``: one gateway process) a hold is an :class:`asyncio.Lock`
per key, and needs nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.lock import Lock

    from dexorder.config import GatewayConfig

log = structlog.get_logger(part="gateway")


class Leases(Protocol):
    """Holds on keys; ``async with leases.hold(key):`` waits for its turn."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]: ...

    async def close(self) -> None: ...


class LocalLeases:
    """Holds within this process: an asyncio lock per key, dropped when nobody uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def close(self) -> None:
        return None


class RedisLeases:
    """Holds shared by every replica using one Redis (and one ``prefix``)."""

    def __init__(
        self, url: str, prefix: str = "dexorder:", lease_s: float = 30.0, poll_s: float = 0.05
    ) -> None:
        import redis.asyncio as redis

        self.redis: Redis = redis.from_url(url)
        self.prefix = f"{prefix}lease:"
        self.lease_s, self.poll_s = lease_s, poll_s

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self.redis.lock(
            self.prefix + key,
            timeout=self.lease_s,
            sleep=self.poll_s,
            # the renewing task is another task of this loop, not another thread
            thread_local=False,
        )
        await lock.acquire()
        renewer = asyncio.create_task(self._renew(lock, key))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                await lock.release()
            except Exception as exc:  # expired (now another's) or Redis away: it expires
                log.warning("lease not released", key=key, reason=repr(exc))

    async def _renew(self, lock: Lock, key: str) -> None:
        from redis.exceptions import LockNotOwnedError, RedisError

        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await lock.reacquire()
            except LockNotOwnedError:
                # this replica stalled past its lease: another may be working meanwhile
                log.error("lease lost while held", key=key, lease_s=self.lease_s)
                return
            except RedisError as exc:  # a blip: the next renewal may still be in time
                log.warning("lease renewal failed", key=key, reason=str(exc))

    async def close(self) -> None:
        await self.redis.aclose()


def leases_for(cfg: GatewayConfig) -> Leases:
    """Redis leases when the gateway has Redis (replicas), in-process ones otherwise."""
    if cfg.redis_url:
        return RedisLeases(cfg.redis_url, cfg.redis_prefix, cfg.turn_lease_s)
    return LocalLeases()
