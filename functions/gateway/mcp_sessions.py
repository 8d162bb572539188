"""What the MCP door keeps of a client's handshake-era session, so that any replica can
carry it across the agent's sleep (``mcp_door.py``, "Sessions across an agent's sleep").

Per person and the session id the client holds: the client's own ``initialize`` request
(replayed to a fresh agent, so the agent sees the client's real ``clientInfo`` and
capabilities) and the id of the agent session serving it now. With ``gateway.redis_url``
it lives in Redis, so a replica that never saw the client's ``initialize`` replays it
all the same, and every replica translates the session id alike; each record lives
``gateway.refresh_ttl_days`` (a login's life) after its last use. Without Redis (one
gateway process) it is a bounded in-process map.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

import msgspec
import structlog

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from dexorder.config import GatewayConfig

log = structlog.get_logger(part="gateway")

#: How many sessions a replica keeps without Redis.
MAX_SESSIONS = 10_000
#: A session id longer than this (not one an agent made) is not remembered.
MAX_SESSION_ID = 256


class DoorSession(msgspec.Struct, frozen=True):
    """One client session as the door keeps it."""

    #: the client's ``initialize`` request, as it sent it (JSON)
    initialize: str
    #: the agent session serving the client's session now (the same id until the agent
    #: slept and the door opened a new one)
    agent_session: str


class SessionMemory(Protocol):
    async def get(self, user: str, client_session: str) -> DoorSession | None: ...

    async def put(self, user: str, client_session: str, session: DoorSession) -> None: ...

    async def forget(self, user: str, client_session: str) -> None: ...

    async def close(self) -> None: ...


class LocalSessionMemory:
    """This process's sessions, the ``size`` most recently used."""

    def __init__(self, size: int = MAX_SESSIONS) -> None:
        self.size = size
        self._d: OrderedDict[tuple[str, str], DoorSession] = OrderedDict()

    async def get(self, user: str, client_session: str) -> DoorSession | None:
        found = self._d.get((user, client_session))
        if found is not None:
            self._d.move_to_end((user, client_session))
        return found

    async def put(self, user: str, client_session: str, session: DoorSession) -> None:
        if len(client_session) > MAX_SESSION_ID:
            return
        self._d[(user, client_session)] = session
        self._d.move_to_end((user, client_session))
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    async def forget(self, user: str, client_session: str) -> None:
        self._d.pop((user, client_session), None)

    def __len__(self) -> int:
        return len(self._d)

    async def close(self) -> None:
        return None


class RedisSessionMemory:
    """Sessions shared by every replica on one Redis (and ``prefix``), each expiring
    ``ttl_s`` after its last use."""

    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        import redis.asyncio as redis

        self.redis: Redis = redis.from_url(url)
        self.prefix = f"{prefix}mcp_session:"
        self.ttl_s = ttl_s

    def _key(self, user: str, client_session: str) -> str:
        return f"{self.prefix}{user}:{client_session}"

    async def get(self, user: str, client_session: str) -> DoorSession | None:
        if len(client_session) > MAX_SESSION_ID:
            return None
        raw = await self.redis.getex(self._key(user, client_session), ex=self.ttl_s)
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=DoorSession)
        except msgspec.MsgspecError as exc:  # written by another version: start afresh
            log.warning("mcp door session unreadable", user=user, reason=str(exc))
            return None

    async def put(self, user: str, client_session: str, session: DoorSession) -> None:
        if len(client_session) > MAX_SESSION_ID:
            return
        key = self._key(user, client_session)
        await self.redis.set(key, msgspec.json.encode(session), ex=self.ttl_s)

    async def forget(self, user: str, client_session: str) -> None:
        await self.redis.delete(self._key(user, client_session))

    async def close(self) -> None:
        await self.redis.aclose()


def session_memory_for(cfg: GatewayConfig) -> SessionMemory:
    """In Redis when the gateway has Redis (replicas), in process otherwise."""
    if cfg.redis_url:
        return RedisSessionMemory(cfg.redis_url, cfg.redis_prefix, cfg.refresh_ttl_days * 86_400)
    return LocalSessionMemory()
