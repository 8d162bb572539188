"""Signatures on the Kafka records that make a platform function act.

A record on ``notifications`` becomes a message in a person's chat, sent with platform
authority; one on ``backfill.requests`` becomes work for the ingestors; one on
``tool.calls`` a call into someone's agent. Anyone able to produce to the broker could
otherwise put a fake confirmation code into another person's chat. So every such record
carries an Ed25519 signature by a platform part in the Kafka header ``dexordersig``, and
whoever delivers or acts on it (the trigger dispatcher, the functions themselves)
verifies it and refuses a record without a valid one.

What is signed: a context string, the topic (a record signed for one topic is not
valid on another) and the record's value. The value is taken as the functions see it:
functions-framework hands a function the CloudEvent data already parsed from JSON, so a
JSON value is signed in a canonical form (sorted keys, no spaces) that the dispatcher
and the function both recompute from the parsed value; a value that is not JSON is
signed as its bytes.

Knative's KafkaSource passes record headers on as CloudEvent extensions named
``kafkaheader<name>``: the signature reaches a function as ``kafkaheaderdexordersig``
(HTTP ``ce-kafkaheaderdexordersig``), and the local dispatcher does the same.

Keys: ``kafka.record_signing_key`` (private, producers) and ``kafka.record_verify_key``
(public, consumers); on one machine both come from ``state/kafka_record_ed25519.pem``,
made on first use. Agents never hold the private key.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dexorder.config import ConfigError, Settings
from dexorder.secret_files import secret_file
from dexorder.tokens import new_private_pem

#: The Kafka header holding the signature (letters only: KafkaSource keeps it as is).
HEADER = "dexordersig"
#: The CloudEvent extension KafkaSource (and the local dispatcher) turns it into.
EXTENSION = f"kafkaheader{HEADER}"
_CONTEXT = b"dexorder-kafka-record-v1\x00"


class ForgedRecord(ValueError):
    """A record without a valid platform signature; the message says what is wrong."""


@dataclass(frozen=True)
class RecordKeys:
    """The public key (to verify) and, in a part that produces, the private key (to sign)."""

    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None = None


def _from_private_pem(pem: str, where: str) -> RecordKeys:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where}: not an Ed25519 key")
    return RecordKeys(key.public_key(), key)


def record_keys(cfg: Settings) -> RecordKeys:
    """This process's record keys: configured, or (one machine) the home folder's key file."""
    k = cfg.kafka
    if k.record_signing_key:
        return _from_private_pem(k.record_signing_key, "kafka.record_signing_key")
    if k.record_verify_key:
        try:
            public = serialization.load_pem_public_key(k.record_verify_key.encode())
        except ValueError as exc:
            raise ConfigError(f"kafka.record_verify_key: not a PEM public key ({exc})") from None
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError("kafka.record_verify_key: not an Ed25519 key")
        return RecordKeys(public)
    path = Path(cfg.home) / "state" / "kafka_record_ed25519.pem"
    return _from_private_pem(secret_file(path, new_private_pem), str(path))


def _signed_bytes(topic: str, data: object) -> bytes:
    if isinstance(data, bytes):
        body = data
    else:
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return _CONTEXT + topic.encode() + b"\x00" + body


def as_seen_by_functions(value: bytes) -> object:
    """A record value as functions-framework hands it to a function: JSON parsed, else bytes."""
    if not value:
        return None  # an empty body is no data at all
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting too deep to parse (functions-framework refuses it with a
        # 400); checked as its bytes, so an unsigned one is refused, not a crashed consumer
        return value


def sign(keys: RecordKeys, topic: str, data: object) -> str:
    """The signature (base64url) of ``data`` on ``topic``; ``data`` as the functions see it."""
    if keys.private is None:
        raise ForgedRecord("this process holds only the public record key; it cannot sign")
    return base64.urlsafe_b64encode(keys.private.sign(_signed_bytes(topic, data))).decode()


def signed_record(keys: RecordKeys, topic: str, value: bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers that make ``value`` a platform record on ``topic``."""
    return [(HEADER, sign(keys, topic, as_seen_by_functions(value)).encode())]


def verify(keys: RecordKeys, topic: str, data: object, signature: str | bytes | None) -> None:
    """Raise :class:`ForgedRecord` unless ``signature`` is a platform signature of ``data``."""
    if not signature:
        raise ForgedRecord(f"unsigned record on {topic}: only platform parts may produce it")
    try:
        raw = base64.urlsafe_b64decode(signature)
        keys.public.verify(raw, _signed_bytes(topic, data))
    except (InvalidSignature, binascii.Error, ValueError):
        raise ForgedRecord(
            f"forged record on {topic}: the signature is not the platform's"
        ) from None


def verify_record(
    keys: RecordKeys, topic: str, value: bytes, headers: list[tuple[str, bytes]] | None
) -> None:
    """Check a consumed record's signature header (:class:`ForgedRecord` if it fails)."""
    found = [v for k, v in headers or () if k == HEADER]
    if len(found) > 1:
        raise ForgedRecord(f"record on {topic} with {len(found)} signature headers")
    verify(keys, topic, as_seen_by_functions(value), found[0] if found else None)
