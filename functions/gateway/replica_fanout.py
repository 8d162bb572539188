"""Critical events reach the person at whichever gateway replica holds their WebSocket.

An agent's event (or a platform notification) arrives at one replica; the person's
WebSocket may be open at another. The replica that has none of their sockets asks the
ones that do (a presence registry says which: per person, the replicas holding a socket
of theirs, each entry with its replica's own expiry, refreshed while it lives); the one
with the socket delivers it, records it delivered and answers. Only when no replica
holds one (the registry names none, or every one asked said no) does the event go to
Telegram. When the asked replicas are silent past :attr:`answer_s` the asker takes the
ask's *fate* for Telegram, atomically, unless an asked replica took it for its sockets
first (then it waits a while longer for the answer and, still none, does not acknowledge:
the agent sends the event again and the delivered record decides). So an event never
reaches both a socket and Telegram through one ask, and never two sockets' replicas
and Telegram through a late answer.

Two replicas receiving the same event id (an agent re-sending after reconnecting to
another replica) do not both deliver: the event id is *claimed* before delivering
(:class:`Claims`), the claim is released when delivery fails (the event comes again)
and expires on its own when its holder dies mid-delivery.

This module is the pure part (the decisions, the in-process stand-ins for one process);
``gateway/replica_redis.py`` is the Redis I/O. Wire types: ``gateway/replica_contracts.py``.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from dexorder.schemas import UserEvent

#: a ``fate`` value: an asked replica is writing to its sockets
FATE_SOCKETS = "sockets"
#: a ``fate`` value: the asker gave up waiting and sends it to Telegram instead
FATE_TELEGRAM = "telegram"


class Reach(enum.Enum):
    """What asking the other replicas came to."""

    #: a WebSocket at another replica has it
    DELIVERED = "delivered"
    #: no other replica has (or could write to) a socket of the person: try Telegram
    NOBODY = "nobody"
    #: another replica took it and did not say how it went: neither Telegram nor an ack
    UNSURE = "unsure"


def others(holders: Iterable[str], me: str) -> frozenset[str]:
    """The replicas to ask: those holding a socket of the person, but not this one."""
    return frozenset(holders) - {me}


def settled(expected: frozenset[str], answers: Mapping[str, bool]) -> Reach | None:
    """The outcome once known: delivered as soon as one replica says so, nobody once every
    asked replica said no; None while answers are outstanding."""
    if any(answers.values()):
        return Reach.DELIVERED
    if expected <= answers.keys():
        return Reach.NOBODY
    return None


def may_deliver(fate_before: str | None) -> bool:
    """An asked replica writes to its sockets only if the asker has not given up already
    (another asked replica writing too is fine: each of the person's sockets gets it)."""
    return fate_before in (None, FATE_SOCKETS)


def gave_up(fate_before: str | None) -> bool:
    """The asker, its answer time over, set the fate to Telegram: it did so first (nobody
    is writing to a socket, nor will)."""
    return fate_before is None


class Claims(Protocol):
    """Who is delivering an event id now (at most one replica at a time)."""

    async def claim(self, event_id: str) -> str | None:
        """A token for the claim, or None when another holds it."""
        ...

    async def release(self, event_id: str, token: str) -> None:
        """Give the claim up (only if ``token`` still holds it)."""
        ...


class LocalClaims:
    """Claims in this process (one gateway process)."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    async def claim(self, event_id: str) -> str | None:
        if event_id in self._held:
            return None
        token = secrets.token_hex(8)
        self._held[event_id] = token
        return token

    async def release(self, event_id: str, token: str) -> None:
        if self._held.get(event_id) == token:
            del self._held[event_id]


@dataclass(frozen=True)
class Here:
    """What the fanout needs of this replica's channels and records."""

    online: Callable[[str], bool]
    people: Callable[[], list[str]]
    #: write to this replica's sockets of the event's person; True once one has it
    to_sockets: Callable[[UserEvent], Awaitable[bool]]
    #: record the event delivered (by event id)
    mark: Callable[[UserEvent], Awaitable[None]]
    #: deliver what is held for the person
    deliver_held: Callable[[str], Awaitable[int]]


class Replicas(Protocol):
    """The other gateway replicas, as far as delivering events goes."""

    claims: Claims

    async def start(self, here: Here) -> None: ...

    async def close(self) -> None: ...

    async def present(self, user: str) -> None:
        """``user``'s first socket here opened."""
        ...

    async def absent(self, user: str) -> None:
        """``user``'s last socket here closed."""
        ...

    async def ask(self, event: UserEvent) -> Reach:
        """Have a replica holding a socket of the event's person deliver it there."""
        ...

    async def held_waiting(self, user: str) -> None:
        """Something was held for ``user``: the replica with their socket delivers it."""
        ...


class LoneReplica:
    """One gateway process: there are no others to ask."""

    def __init__(self) -> None:
        self.claims: Claims = LocalClaims()

    async def start(self, here: Here) -> None:
        pass

    async def close(self) -> None:
        pass

    async def present(self, user: str) -> None:
        pass

    async def absent(self, user: str) -> None:
        pass

    async def ask(self, event: UserEvent) -> Reach:
        return Reach.NOBODY

    async def held_waiting(self, user: str) -> None:
        pass


class Answers:
    """The answers to one ask, as they come in."""

    def __init__(self, expected: frozenset[str]) -> None:
        self.expected = expected
        self.got: dict[str, bool] = {}
        self._changed = asyncio.Event()

    def add(self, replica: str, delivered: bool) -> None:
        if replica in self.expected:
            self.got[replica] = self.got.get(replica, False) or delivered
            self._changed.set()

    async def outcome(self, within_s: float) -> Reach | None:
        """The settled outcome, or None when ``within_s`` passes first."""
        try:
            async with asyncio.timeout(within_s):
                while (reach := settled(self.expected, self.got)) is None:
                    self._changed.clear()
                    await self._changed.wait()
                return reach
        except TimeoutError:
            return None
