"""Each tool call runs once, however often its event is delivered.

A Kafka Broker's Trigger (and the local dispatcher, which does what it does) delivers at
least once: a function that answered but whose answer was lost, a restart before the
offset was committed, or a retry after a timeout brings the same CloudEvent again. A tool
call may place an order, so running it twice is not acceptable. The tool proxy therefore
claims each call here before running it and stores its reply when done; a redelivery
finds the claim and gets the stored reply (the same reply event id and data) without
the tool running again.

A call is known by its person, its CloudEvent ``source`` and ``id`` (the pair a
CloudEvent is unique by): the producer's own id when the record already was a
CloudEvent, ``partition:P/offset:O`` when KafkaSource made one of a plain record (the
source then names the topic, so the pair is unique too). The person is part of the key,
so nobody can read another's result by reusing an id; the same key with another tool or
other arguments is refused (:class:`Decision` ``CONFLICT``).

A claim with no reply after ``lease_s`` is a run that died midway (its pod was killed):
the tool may or may not have run, so it is not run again; the call is answered with an
error saying so, stored as its reply like any other. Entries expire after ``memory_s``.

Where: Redis (``gateway.redis_url``) in the cluster, shared by every tool-proxy pod; in
this process otherwise (on one machine the gateway hosts the tool proxy itself).
:func:`decide` is the pure rule; the stores only keep records.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable
from typing import Protocol

import msgspec


class CallRecord(msgspec.Struct, kw_only=True, frozen=True):
    """What is kept per call: its digest, when it was claimed, and its reply once done."""

    digest: str
    claimed_at: float
    reply_id: str | None = None
    #: the reply's data (a ToolResult's JSON)
    reply: bytes | None = None


class Decision(enum.Enum):
    RUN = "run"  # ours: run the tool
    REPLAY = "replay"  # done before: answer with the stored reply
    RUNNING = "running"  # another delivery is running it now: wait for its reply
    INTERRUPTED = "interrupted"  # claimed, never finished: may have run, not run again
    CONFLICT = "conflict"  # the same id with another call


def decide(existing: CallRecord | None, digest: str, now: float, lease_s: float) -> Decision:
    """What a delivery does, given what the store held when it tried to claim the call."""
    if existing is None:
        return Decision.RUN
    if existing.digest != digest:
        return Decision.CONFLICT
    if existing.reply is not None:
        return Decision.REPLAY
    if now - existing.claimed_at < lease_s:
        return Decision.RUNNING
    return Decision.INTERRUPTED


def call_key(user: str, source: str, event_id: str) -> str:
    """The store key of one person's call (hashed: ids are the producer's text)."""
    raw = "\0".join((user, source, event_id)).encode()
    return hashlib.sha256(raw).hexdigest()


def call_digest(tool: str, arguments: bytes) -> str:
    """What identifies the call's content (tool and arguments, not the token)."""
    return hashlib.sha256(tool.encode() + b"\0" + arguments).hexdigest()


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(CallRecord).decode


class CallStore(Protocol):
    async def claim(self, key: str, record: CallRecord, ttl_s: int) -> CallRecord | None:
        """Keep ``record`` under ``key`` unless something is there; None if it was kept,
        else what is there."""
        ...

    async def get(self, key: str) -> CallRecord | None: ...

    async def put(self, key: str, record: CallRecord, ttl_s: int) -> None:
        """Replace what is under ``key`` (the reply of a claimed call)."""
        ...

    async def release(self, key: str) -> None:
        """Forget a claim whose tool never started (a retry may run it)."""
        ...

    async def close(self) -> None: ...


class MemoryCallStore:
    """In this process (one machine: the gateway hosts the tool proxy)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._records: dict[str, tuple[CallRecord, float]] = {}

    def _live(self, key: str) -> CallRecord | None:
        held = self._records.get(key)
        if held is None or held[1] <= self.clock():
            self._records.pop(key, None)
            return None
        return held[0]

    async def claim(self, key: str, record: CallRecord, ttl_s: int) -> CallRecord | None:
        existing = self._live(key)
        if existing is not None:
            return existing
        if len(self._records) > 100_000:  # drop what has expired
            now = self.clock()
            self._records = {k: v for k, v in self._records.items() if v[1] > now}
        self._records[key] = (record, self.clock() + ttl_s)
        return None

    async def get(self, key: str) -> CallRecord | None:
        return self._live(key)

    async def put(self, key: str, record: CallRecord, ttl_s: int) -> None:
        self._records[key] = (record, self.clock() + ttl_s)

    async def release(self, key: str) -> None:
        self._records.pop(key, None)

    async def close(self) -> None:
        return None


class RedisCallStore:
    """In Redis, shared by every tool-proxy pod: a claim is ``SET NX EX`` (atomic)."""

    def __init__(self, url: str, prefix: str = "dexorder:toolcalls:") -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url)
        self.prefix = prefix

    async def claim(self, key: str, record: CallRecord, ttl_s: int) -> CallRecord | None:
        for _ in range(3):  # the holder may expire between our SET and GET: claim again
            if await self.redis.set(self.prefix + key, _encode(record), nx=True, ex=ttl_s):
                return None
            existing = await self.get(key)
            if existing is not None:
                return existing
        raise RuntimeError("the call store neither took nor kept the claim")

    async def get(self, key: str) -> CallRecord | None:
        raw = await self.redis.get(self.prefix + key)
        return _decode(raw) if raw is not None else None

    async def put(self, key: str, record: CallRecord, ttl_s: int) -> None:
        await self.redis.set(self.prefix + key, _encode(record), ex=ttl_s)

    async def release(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)

    async def close(self) -> None:
        await self.redis.aclose()


def open_call_store(redis_url: str | None) -> CallStore:
    return RedisCallStore(redis_url) if redis_url else MemoryCallStore()
