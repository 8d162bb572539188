"""The gateway's end of critical events: a ROUTER the agents' DEALERs send to.

Each :class:`~dexorder.schemas.UserEvent` is delivered to the person's
channels (``deliver`` returns whether it reached them), recorded by event id,
and only then acknowledged; an event id seen before is acknowledged without
delivering it again. So an agent that re-sends (after a restart, or because
an ack was lost) never makes the person see an event twice, and an event that
could not be delivered stays in the agent's outbox and comes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
import zmq
import zmq.asyncio
from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dexorder.schemas import EventAck, InvalidMessage, UserEvent, decode, encode
from gateway.accounts.models import DeliveredEvent
from gateway.replica_fanout import Claims, LocalClaims

Deliver = Callable[[UserEvent], Awaitable[bool]]

log = structlog.get_logger(part="gateway")


class DeliveredEvents:
    """Which event ids were delivered, in the accounts database (survives restarts)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seen(self, event_id: str) -> bool:
        with Session(self.engine) as s:
            return s.get(DeliveredEvent, event_id) is not None

    def mark(self, event: UserEvent) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                s.add(
                    DeliveredEvent(
                        event_id=event.event_id,
                        account_id=event.user,
                        kind=event.kind,
                        delivered_at=int(time.time() * 1000),
                    )
                )
        except IntegrityError:
            pass  # another replica recorded it first

    def forget_account(self, account_id: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(delete(DeliveredEvent).where(DeliveredEvent.account_id == account_id))


class EventRouter:
    """Receives, delivers once, acknowledges."""

    def __init__(
        self,
        endpoint: str,
        delivered: DeliveredEvents,
        deliver: Deliver,
        sender: Callable[[str], str] | None = None,
        claims: Claims | None = None,
    ) -> None:
        """``sender(auth)`` names the person an event's token belongs to (raising if it is
        not a valid token); when given, an event for anyone else is refused. ``claims``:
        who is delivering an event id now, shared by the replicas (in process by default)."""
        self.endpoint = endpoint
        self.delivered = delivered
        self.deliver = deliver
        self.sender = sender
        self.claims: Claims = claims or LocalClaims()
        self.stats = {
            "received": 0,
            "delivered": 0,
            "duplicates": 0,
            "claimed_elsewhere": 0,
            "undelivered": 0,
            "malformed": 0,
            "forged": 0,
        }
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        for attempt in range(50):  # a restart may find the port still held for a moment
            try:
                sock.bind(self.endpoint)
                break
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or attempt == 49:
                    sock.close()
                    raise
                await asyncio.sleep(0.1)
        self.ready.set()
        try:
            while not self._stop.is_set():
                if not await sock.poll(100):
                    continue
                frames = await sock.recv_multipart()
                if len(frames) != 2:
                    self.stats["malformed"] += 1
                    continue
                identity, body = frames
                try:
                    event = decode(body)
                except InvalidMessage:
                    event = None
                if not isinstance(event, UserEvent) or not event.critical:
                    self.stats["malformed"] += 1
                    continue
                if not self._authentic(event):
                    self.stats["forged"] += 1
                    log.warning("event refused: its token is not its person's", user=event.user)
                    continue
                self.stats["received"] += 1
                if await self.receive(event):
                    await sock.send_multipart([identity, encode(EventAck(event_id=event.event_id))])
        finally:
            sock.close()

    def _authentic(self, event: UserEvent) -> bool:
        if self.sender is None:
            return True
        try:
            return bool(event.auth) and self.sender(event.auth) == event.user
        except ValueError:
            return False

    async def receive(self, event: UserEvent) -> bool:
        """Deliver ``event`` once per event id; True when it can be acknowledged.

        The event id is claimed first: the same event reaching two replicas at once (an
        agent that re-sent it after reconnecting elsewhere) is delivered by the one that
        claimed it; the other does not acknowledge it yet (the agent sends it again and
        then finds it delivered). A failed delivery releases the claim; a replica dying
        mid-delivery leaves it to expire."""
        if await asyncio.to_thread(self.delivered.seen, event.event_id):
            self.stats["duplicates"] += 1
            return True
        token = await self.claims.claim(event.event_id)
        if token is None:
            self.stats["claimed_elsewhere"] += 1
            return False
        try:
            # looked at again under the claim: a replica may have delivered it, recorded
            # it and released its claim between the look above and the claim
            if await asyncio.to_thread(self.delivered.seen, event.event_id):
                self.stats["duplicates"] += 1
                return True
            try:
                ok = await self.deliver(event)
            except Exception:
                log.exception("delivering an event failed", event_id=event.event_id)
                ok = False
            if not ok:
                self.stats["undelivered"] += 1
                return False  # no ack: the agent sends it again
            await asyncio.to_thread(self.delivered.mark, event)
            self.stats["delivered"] += 1
            return True
        finally:
            await self.claims.release(event.event_id, token)
