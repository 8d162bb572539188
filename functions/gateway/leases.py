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

A replica that stalls past its lease (its renewal finds the key gone or another's) has
lost it while another replica may already be running the same person's turn: the code
under ``async with leases.hold(key):`` is then cancelled and the hold raises
:class:`LeaseLost` (as :func:`asyncio.timeout` turns its cancellation into
``TimeoutError``; a cancellation from outside stays a ``CancelledError``), and
:func:`check_held` stops it before any side effect the renewer has not caught up with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.lock import Lock

    from dexorder.config import GatewayConfig

log = structlog.get_logger(part="gateway")


class LeaseLost(Exception):
    """This replica's hold on ``key`` ran out while it was held (it stalled past the lease:
    a long pause, SIGSTOP, a lost network): another replica may be doing the same work, so
    what ran under the hold was stopped."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the lease on {key!r} was lost while held")
        self.key = key


@dataclass
class _Holding:
    """One hold of this task: until when it is surely ours (monotonic), and whether lost."""

    key: str
    valid_until: float
    lost: bool = False


#: The holds of the running task (and of tasks it starts), innermost last.
_holding: ContextVar[tuple[_Holding, ...]] = ContextVar("dexorder_leases", default=())


async def _taken(holder: asyncio.Task[object], cancelling: int, cancelled: bool) -> None:
    """Account for our cancellation of ``holder`` that its block did not end with: take it
    if it is still due (a step away), then let a cancellation from outside go on."""
    if not cancelled:
        return
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)
    if holder.uncancel() > cancelling:
        raise asyncio.CancelledError


def check_held() -> None:
    """Raise :class:`LeaseLost` if a lease the caller works under is lost or past its
    lease as far as this clock knows, with no Redis round trip. Called right before
    anything the person would see or that changes their account (a tool call to their
    agent, a frame to them): a replica resuming from a stall runs what was ready before
    its renewer notices, so the renewer's cancellation alone could come too late."""
    now = time.monotonic()
    for held in _holding.get():
        if held.lost or now >= held.valid_until:
            held.lost = True
            raise LeaseLost(held.key)


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
        holder = asyncio.current_task()
        assert holder is not None, "a lease is held by a task"
        lock = self.redis.lock(
            self.prefix + key,
            timeout=self.lease_s,
            sleep=self.poll_s,
            # the renewing task is another task of this loop, not another thread
            thread_local=False,
        )
        await lock.acquire()
        # the lease runs from the SET inside acquire(): from before this renewal, surely
        started = time.monotonic()
        await lock.reacquire()
        held = _Holding(key, started + self.lease_s)
        # cancellations of the holder already asked for (from outside) when it got the lease
        cancelling = holder.cancelling()
        cancelled_by_us = False

        def lost() -> None:
            nonlocal cancelled_by_us
            held.lost = True
            if not cancelled_by_us:
                cancelled_by_us = True
                holder.cancel(f"lease on {key!r} lost")

        renewer = asyncio.create_task(self._renew(lock, held, lost))
        outer = _holding.set((*_holding.get(), held))
        try:
            yield
        except asyncio.CancelledError as exc:
            # ours (and only ours) becomes LeaseLost; one from outside goes on as it came
            if cancelled_by_us and holder.uncancel() <= cancelling:
                raise LeaseLost(key) from exc
            raise
        except LeaseLost:
            raise  # check_held found it first
        except BaseException as exc:
            if not held.lost:
                raise
            await _taken(holder, cancelling, cancelled_by_us)
            raise LeaseLost(key) from exc  # what failed did so under a lost lease
        else:
            if held.lost:  # the block swallowed our cancellation, or ended first
                await _taken(holder, cancelling, cancelled_by_us)
                raise LeaseLost(key)
        finally:
            _holding.reset(outer)
            await self._let_go(lock, renewer, held)

    async def _let_go(self, lock: Lock, renewer: asyncio.Task[None], held: _Holding) -> None:
        renewer.cancel()
        # wait() does not raise the renewer's CancelledError: one raised here is the
        # holder's own (cancelled from outside while letting go), and goes on
        await asyncio.wait([renewer])
        if held.lost:
            return  # another's now, or nobody's: nothing of ours to release
        try:
            await lock.release()
        except Exception as exc:  # expired (now another's) or Redis away: it expires
            log.warning("lease not released", key=held.key, reason=repr(exc))

    async def _renew(self, lock: Lock, held: _Holding, lost: Callable[[], None]) -> None:
        from redis.exceptions import LockNotOwnedError, RedisError

        while True:
            # woken at the next third of the lease, or at its end if renewals failed
            await asyncio.sleep(
                min(self.lease_s / 3, max(0.0, held.valid_until - time.monotonic()))
            )
            if time.monotonic() >= held.valid_until:
                # this replica stalled (or Redis was away) past the lease: another may be
                # working meanwhile, whatever Redis would say now
                log.error("lease lost while held", key=held.key, lease_s=self.lease_s)
                lost()
                return
            started = time.monotonic()
            try:
                await lock.reacquire()
            except LockNotOwnedError:
                log.error("lease lost while held", key=held.key, lease_s=self.lease_s)
                lost()
                return
            except RedisError as exc:  # a blip: the next renewal may still be in time
                log.warning("lease renewal failed", key=held.key, reason=str(exc))
            else:
                held.valid_until = started + self.lease_s

    async def close(self) -> None:
        await self.redis.aclose()


def leases_for(cfg: GatewayConfig) -> Leases:
    """Redis leases when the gateway has Redis (replicas), in-process ones otherwise."""
    if cfg.redis_url:
        return RedisLeases(cfg.redis_url, cfg.redis_prefix, cfg.turn_lease_s)
    return LocalLeases()
