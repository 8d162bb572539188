"""The Redis side of ``gateway/replica_fanout.py``: presence, claims, asks and answers.

Keys and channels, all under ``<namespace>replicas:``:

- ``presence:<person>``: a sorted set, member a replica id, score the time (ms) its entry
  expires; each replica refreshes its entries every third of ``presence_ttl_s`` while it
  holds the person's socket and removes them when the last one closes, so a replica that
  died stops counting within ``presence_ttl_s``;
- ``claim:<event id>``: who is delivering that event now (SET NX, expires by itself);
- ``fate:<ask id>``: ``sockets`` or ``telegram``, whichever of the asked and the asker
  came first (SET NX GET);
- ``to:<replica id>``: the channel asks and answers are published to, one per replica;
  ``all``: the channel every replica listens to (held notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

import msgspec
import structlog

from dexorder.schemas import UserEvent
from gateway.replica_contracts import (
    DeliverAnswer,
    DeliverAsk,
    HeldWaiting,
    ReplicaMessage,
    seal,
    unseal,
)
from gateway.replica_fanout import (
    FATE_SOCKETS,
    FATE_TELEGRAM,
    Answers,
    Claims,
    Here,
    Reach,
    gave_up,
    may_deliver,
    others,
)

log = structlog.get_logger(part="gateway")

#: how long an event id stays claimed by a replica that died while delivering it
CLAIM_TTL_MS = 30_000
#: after taking an ask's fate failed (an asked replica is writing), how much longer the
#: asker waits for its answer before leaving the event unacknowledged
LATE_ANSWER_S = 10.0

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisClaims:
    def __init__(self, redis: Any, prefix: str, ttl_ms: int = CLAIM_TTL_MS) -> None:
        self.redis, self.prefix, self.ttl_ms = redis, prefix, ttl_ms
        self._release = redis.register_script(_RELEASE)

    async def claim(self, event_id: str) -> str | None:
        token = secrets.token_hex(8)
        try:
            taken = await self.redis.set(self.prefix + event_id, token, nx=True, px=self.ttl_ms)
        except Exception as exc:
            # Redis away: delivered unclaimed rather than not at all; the delivered record
            # still stops every re-send that is not concurrent with this delivery
            log.warning("event id not claimed", event_id=event_id, error=str(exc))
            return token
        return token if taken else None

    async def release(self, event_id: str, token: str) -> None:
        try:
            await self._release(keys=[self.prefix + event_id], args=[token])
        except Exception as exc:  # it expires by itself
            log.warning("event claim not released", event_id=event_id, error=str(exc))


class RedisReplicas:
    """This replica among the others, through one Redis."""

    def __init__(
        self,
        url: str,
        namespace: str,
        key: bytes,
        answer_s: float = 0.5,
        presence_ttl_s: float = 15.0,
        replica_id: str | None = None,
        late_answer_s: float = LATE_ANSWER_S,
    ) -> None:
        import redis.asyncio as redis

        self.redis: Any = redis.from_url(url)
        self.me = replica_id or secrets.token_hex(6)
        self.ns = f"{namespace}replicas:"
        self.key = key
        self.answer_s = answer_s
        self.late_answer_s = late_answer_s
        self.presence_ttl_ms = int(presence_ttl_s * 1000)
        self.claims: Claims = RedisClaims(self.redis, self.ns + "claim:")
        self.stats = {"asked": 0, "answered": 0, "refused": 0, "held_woken": 0, "late": 0}
        self._asks: dict[str, Answers] = {}
        self._here: Here | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: set[asyncio.Task[None]] = set()
        self._pubsub: Any = None

    def _to(self, replica: str) -> str:
        return f"{self.ns}to:{replica}"

    def _presence(self, user: str) -> str:
        return f"{self.ns}presence:{user}"

    # --- life ----------------------------------------------------------------------------

    async def start(self, here: Here) -> None:
        self._here = here
        self._pubsub = self.redis.pubsub()
        channels = [self._to(self.me), self.ns + "all"]
        await self._pubsub.subscribe(*channels)
        # listening once Redis confirms both: an ask published after start() reaches us
        confirmed = 0
        async with asyncio.timeout(10):
            while confirmed < len(channels):
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "subscribe":
                    confirmed += 1
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._keep_present()),
        ]

    async def close(self) -> None:
        for task in [*self._tasks, *self._serving]:
            task.cancel()
        for task in [*self._tasks, *self._serving]:
            with contextlib.suppress(BaseException):
                await task
        if self._here is not None:  # what this replica held is no longer here
            with contextlib.suppress(Exception):
                for user in self._here.people():
                    await self.redis.zrem(self._presence(user), self.me)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.redis.aclose()

    # --- presence ------------------------------------------------------------------------

    async def present(self, user: str) -> None:
        try:
            await self._mark_present([user])
        except Exception as exc:  # Redis away: the next refresh adds it
            log.warning("presence not recorded", user=user, error=str(exc))

    async def absent(self, user: str) -> None:
        try:
            await self.redis.zrem(self._presence(user), self.me)
        except Exception as exc:  # Redis away: the entry expires by itself
            log.warning("presence not removed", user=user, error=str(exc))

    async def _mark_present(self, users: list[str]) -> None:
        expires = _now_ms() + self.presence_ttl_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                key = self._presence(user)
                pipe.zadd(key, {self.me: expires})
                # entries of dead replicas go with the key once nobody refreshes it
                pipe.pexpire(key, 2 * self.presence_ttl_ms)
            await pipe.execute()

    async def _keep_present(self) -> None:
        assert self._here is not None
        while True:
            await asyncio.sleep(self.presence_ttl_ms / 3000)
            try:
                people = self._here.people()
                if people:
                    await self._mark_present(people)
            except Exception as exc:
                log.warning("presence not refreshed", error=str(exc))

    async def holders(self, user: str) -> list[str]:
        """The replicas holding a socket of ``user`` now (by their unexpired entries)."""
        members = await self.redis.zrangebyscore(self._presence(user), _now_ms(), "+inf")
        return [m.decode() for m in members]

    # --- asking --------------------------------------------------------------------------

    async def _publish(self, channel: str, message: ReplicaMessage) -> int:
        return int(await self.redis.publish(channel, seal(self.key, self.me, message, _now_ms())))

    async def ask(self, event: UserEvent) -> Reach:
        try:
            return await self._ask(event)
        except Exception as exc:  # Redis away: as if nobody else had a socket
            log.warning("could not ask the other replicas", user=event.user, error=str(exc))
            return Reach.NOBODY

    async def _ask(self, event: UserEvent) -> Reach:
        asked = others(await self.holders(event.user), self.me)
        if not asked:
            return Reach.NOBODY
        ask_id = secrets.token_hex(12)
        answers = self._asks[ask_id] = Answers(asked)
        self.stats["asked"] += 1
        try:
            unsigned = msgspec.structs.replace(event, auth="")  # the agent's token stays here
            ask = DeliverAsk(ask_id=ask_id, origin=self.me, event=unsigned)
            for replica in asked:
                if await self._publish(self._to(replica), ask) == 0:
                    answers.add(replica, False)  # nobody listens there: that replica is gone
            reach = await answers.outcome(self.answer_s)
            if reach is not None:
                return reach
            before = await self.redis.set(
                f"{self.ns}fate:{ask_id}", FATE_TELEGRAM, nx=True, get=True, px=CLAIM_TTL_MS
            )
            if gave_up(before.decode() if before is not None else None):
                log.warning("no replica answered in time: Telegram instead", user=event.user)
                return Reach.NOBODY
            self.stats["late"] += 1
            reach = await answers.outcome(self.late_answer_s)
            return reach if reach is not None else Reach.UNSURE
        finally:
            del self._asks[ask_id]

    async def held_waiting(self, user: str) -> None:
        try:
            await self._publish(self.ns + "all", HeldWaiting(user=user))
        except Exception as exc:  # the sweep finds it
            log.warning("could not tell the replicas about a held notification", error=str(exc))

    # --- being asked ---------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection dropped: redis-py reconnects
                log.warning("replica channel read failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            envelope = unseal(self.key, message["data"], _now_ms())
            if envelope is None:
                self.stats["refused"] += 1
                log.warning("a replica message refused: unsealed, stale or unreadable")
                continue
            self._take(envelope.message)

    def _take(self, message: ReplicaMessage) -> None:
        if isinstance(message, DeliverAnswer):
            answers = self._asks.get(message.ask_id)
            if answers is not None:
                answers.add(message.replica, message.delivered)
        elif isinstance(message, DeliverAsk):
            self._spawn(self._serve(message))
        elif self._here is not None and self._here.online(message.user):
            self._spawn(self._deliver_held(message.user))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, ask: DeliverAsk) -> None:
        assert self._here is not None
        delivered = False
        try:
            if self._here.online(ask.event.user):
                before = await self.redis.set(
                    f"{self.ns}fate:{ask.ask_id}", FATE_SOCKETS, nx=True, get=True, px=CLAIM_TTL_MS
                )
                before = before.decode() if before is not None else None
                if may_deliver(before):
                    delivered = await self._here.to_sockets(ask.event)
                    if delivered:  # recorded here too: the answer may be lost
                        await self._here.mark(ask.event)
            self.stats["answered"] += 1
        except Exception:
            log.exception("delivering for another replica failed", event_id=ask.event.event_id)
        answer = DeliverAnswer(ask_id=ask.ask_id, replica=self.me, delivered=delivered)
        try:
            await self._publish(self._to(ask.origin), answer)
        except Exception as exc:  # the asker waits, then gives up; the agent sends it again
            log.warning("could not answer a replica", error=str(exc))

    async def _deliver_held(self, user: str) -> None:
        assert self._here is not None
        self.stats["held_woken"] += 1
        try:
            await self._here.deliver_held(user)
        except Exception:  # the sweep tries again
            log.exception("delivering held notifications failed", user=user)
