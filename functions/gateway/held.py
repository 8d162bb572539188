"""Notifications held for a person none of whose channels is reachable.

A notification from Kafka ``notifications`` has no outbox behind it the way an agent's
critical event has (the agent re-sends until acknowledged): refusing it would only make
the trigger retry and then dead-letter it, and the person would never see it. So the
gateway takes it here, in the accounts database (it survives restarts and is shared by
every replica), keyed by event id, and delivers what is held when the person next opens
a chat: in the order it was taken, each marked delivered (``DeliveredEvents``, so once per
event id) and then removed; a delivery that fails leaves it and the rest held.

With several gateway replicas a notification may reach one that has none of the person's
WebSockets while another has: so each gateway also looks every :data:`SWEEP_S` for what is
held for the people connected to it.

At most ``cap`` are held per person; beyond it the oldest are dropped (logged, counted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dexorder.contracts.events import BadEvent, Notification, decode_notification, encode_event
from dexorder.schemas import UserEvent
from gateway.accounts.models import Account, HeldNotification
from gateway.events import DeliveredEvents

log = structlog.get_logger(part="gateway")

#: held notifications per person; beyond it the oldest are dropped
DEFAULT_CAP = 500
#: a delivery a gateway began this long ago without finishing is taken over by another
CLAIM_TIMEOUT_MS = 60_000
#: how often a gateway looks for what was held, while they were connected, for the people
#: whose WebSockets it holds (the notification reached another replica, which has none)
SWEEP_S = 5.0

Deliver = Callable[[UserEvent], Awaitable[bool]]


class UnknownPerson(LookupError):
    """A notification for someone who has no account (nothing is held for them)."""


def notification_event(note: Notification) -> UserEvent:
    """The critical event a notification is delivered as."""
    return UserEvent(
        event_id=note.event_id,
        user=note.user,
        kind=note.kind,
        payload=note.payload,
        created_at=note.created_at,
        critical=True,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class HeldNotifications:
    """The held notifications, in the accounts database."""

    def __init__(self, engine: Engine, cap: int = DEFAULT_CAP) -> None:
        self.engine = engine
        self.cap = cap
        self.stats = {"held": 0, "duplicates": 0, "dropped": 0, "delivered": 0}

    def hold(self, note: Notification) -> bool:
        """Hold ``note``; False when its event id is held already (nothing changes).
        :class:`UnknownPerson` when its person has no account."""
        try:
            with Session(self.engine) as s, s.begin():
                if s.get(Account, note.user) is None:
                    raise UnknownPerson(note.user)
                held = select(HeldNotification.seq).where(
                    HeldNotification.event_id == note.event_id
                )
                if s.scalar(held) is not None:
                    self.stats["duplicates"] += 1
                    return False
                s.add(
                    HeldNotification(
                        event_id=note.event_id,
                        account_id=note.user,
                        body=encode_event(note),
                        held_at=_now_ms(),
                    )
                )
        except IntegrityError:  # another replica held the same event id just now
            self.stats["duplicates"] += 1
            return False
        self.stats["held"] += 1
        self._keep_within_cap(note.user)
        return True

    def _keep_within_cap(self, account_id: str) -> None:
        with Session(self.engine) as s, s.begin():
            mine = HeldNotification.account_id == account_id
            count = s.scalar(select(func.count()).select_from(HeldNotification).where(mine)) or 0
            excess = count - self.cap
            if excess <= 0:
                return
            oldest = s.scalars(
                select(HeldNotification.seq).where(mine).order_by(HeldNotification.seq)
            ).fetchmany(excess)
            s.execute(delete(HeldNotification).where(HeldNotification.seq.in_(oldest)))
        self.stats["dropped"] += len(oldest)
        log.warning(
            "held notifications over the cap: the oldest dropped",
            user=account_id,
            dropped=len(oldest),
            cap=self.cap,
        )

    def count(self, account_id: str) -> int:
        with Session(self.engine) as s:
            query = select(func.count()).where(HeldNotification.account_id == account_id)
            return s.scalar(query) or 0

    def people_waiting(self, candidates: list[str]) -> set[str]:
        """Which of ``candidates`` have something held."""
        with Session(self.engine) as s:
            query = select(HeldNotification.account_id).where(
                HeldNotification.account_id.in_(candidates)
            )
            return set(s.scalars(query.distinct()))

    def waiting(self, account_id: str) -> list[int]:
        """The held ones of a person, oldest first (their ``seq``)."""
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(HeldNotification.seq)
                    .where(HeldNotification.account_id == account_id)
                    .order_by(HeldNotification.seq)
                )
            )

    def claim(self, seq: int) -> Notification | None:
        """Take held ``seq`` for delivery; None when it is gone or another gateway is
        delivering it (a claim expires after :data:`CLAIM_TIMEOUT_MS`)."""
        now = _now_ms()
        row = HeldNotification
        with Session(self.engine) as s, s.begin():
            taken = s.execute(
                update(row)
                .where(row.seq == seq)
                .where(or_(row.claimed_at.is_(None), row.claimed_at < now - CLAIM_TIMEOUT_MS))
                .values(claimed_at=now)
            )
            if getattr(taken, "rowcount", 0) != 1:
                return None
            body = s.scalar(select(row.body).where(row.seq == seq))
        try:
            return decode_notification(body)
        except BadEvent:  # written by this module from a checked notification: never
            log.error("a held notification is unreadable: removed", seq=seq)
            self.remove(seq)
            return None

    def unclaim(self, seq: int) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(HeldNotification).where(HeldNotification.seq == seq).values(claimed_at=None)
            )

    def remove(self, seq: int) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(delete(HeldNotification).where(HeldNotification.seq == seq))

    def forget_account(self, account_id: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(delete(HeldNotification).where(HeldNotification.account_id == account_id))


async def deliver_held(
    held: HeldNotifications, delivered: DeliveredEvents, deliver: Deliver, user: str
) -> int:
    """Deliver ``user``'s held notifications, oldest first; how many reached them.

    Each is marked delivered before it is removed, so a crash in between costs no second
    delivery. Stops at the first that cannot be delivered (it and the rest stay held) or
    that another gateway is delivering (that one delivers the rest, in order)."""
    count = 0
    for seq in await asyncio.to_thread(held.waiting, user):
        note = await asyncio.to_thread(held.claim, seq)
        if note is None:
            return count
        event = notification_event(note)
        if not await asyncio.to_thread(delivered.seen, event.event_id):
            try:
                ok = await deliver(event)
            except Exception:
                log.exception("delivering a held notification failed", event_id=event.event_id)
                ok = False
            if not ok:
                await asyncio.to_thread(held.unclaim, seq)
                return count
            await asyncio.to_thread(delivered.mark, event)
            held.stats["delivered"] += 1
            count += 1
        await asyncio.to_thread(held.remove, seq)
    return count
