"""What gateway replicas say to each other over Redis pub/sub (``gateway/replica_fanout.py``).

Every message travels as a :class:`Sealed` envelope: the MessagePack of an
:class:`Envelope` and its HMAC-SHA256 under a key every replica derives from the shared
session secret (they share it anyway: a login made at one replica is verified at any).
Redis is platform-internal (only the platform's pods reach it), so the seal is not there
against the outside world but so that a part of the platform that may write to Redis
without being a gateway (the rate-limit counters, a misconfigured service sharing the
instance) cannot make a replica push an event to a person's WebSocket. The agent's own
token (``UserEvent.auth``) is checked by the replica that received the event and never
travels on: an ask carries the event with ``auth`` emptied.
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from dexorder.schemas import UserEvent

#: an envelope older than this (or this far in the future) is refused: a replay
MAX_AGE_MS = 60_000


class DeliverAsk(msgspec.Struct, tag="deliver_ask", kw_only=True):
    """``origin`` received ``event`` and has no WebSocket of its person: the addressed
    replica, which has one, delivers it there and answers."""

    ask_id: str
    origin: str
    event: UserEvent


class DeliverAnswer(msgspec.Struct, tag="deliver_answer", kw_only=True):
    """``replica``'s answer to ask ``ask_id``: whether the event reached a WebSocket there."""

    ask_id: str
    replica: str
    delivered: bool


class HeldWaiting(msgspec.Struct, tag="held_waiting", kw_only=True):
    """A notification was held for ``user``: whichever replica has their WebSocket
    delivers what is held now, instead of at its next sweep."""

    user: str


ReplicaMessage = DeliverAsk | DeliverAnswer | HeldWaiting


class Envelope(msgspec.Struct, kw_only=True):
    sender: str
    sent_at_ms: int
    message: ReplicaMessage


class Sealed(msgspec.Struct, kw_only=True):
    body: bytes
    mac: bytes


_sealed = msgspec.msgpack.Decoder(Sealed)
_envelope = msgspec.msgpack.Decoder(Envelope)


def fanout_key(session_secret: str) -> bytes:
    """The seal's key: its own derivation, so the session secret itself signs nothing here."""
    return hashlib.sha256(b"dexorder gateway replica fanout\0" + session_secret.encode()).digest()


def seal(key: bytes, sender: str, message: ReplicaMessage, now_ms: int) -> bytes:
    body = msgspec.msgpack.encode(Envelope(sender=sender, sent_at_ms=now_ms, message=message))
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return msgspec.msgpack.encode(Sealed(body=body, mac=mac))


def unseal(key: bytes, raw: bytes, now_ms: int) -> Envelope | None:
    """The envelope in ``raw``; None when it is not one, its seal is wrong, or it is stale."""
    try:
        sealed = _sealed.decode(raw)
    except msgspec.DecodeError:
        return None
    if not hmac.compare_digest(hmac.new(key, sealed.body, hashlib.sha256).digest(), sealed.mac):
        return None
    try:
        envelope = _envelope.decode(sealed.body)
    except msgspec.DecodeError:
        return None
    if abs(now_ms - envelope.sent_at_ms) > MAX_AGE_MS:
        return None
    return envelope
