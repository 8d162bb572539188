"""The job's Kafka records that carry platform authority, signed and checked (pure, no Flink).

The platform's functions act only on records signed by a platform part
(:mod:`dexorder.record_signing`: an Ed25519 signature in the ``dexordersig`` header), and
the gateway signs every ``market.rules`` record it writes, tombstones included. So, as the
local runner does (:mod:`streaming.rule_io`):

* a ``market.rules`` record is routed to its ticker only with a valid signature
  (:func:`rule_record_problem`); anyone able to produce to the broker could otherwise make
  the platform tell a person anything;
* a fired rule becomes signed records (:func:`fired_records`): the person's notification on
  ``notifications``, an order's :class:`RuleFired` on ``rules.fired``, and the rule written
  back to ``market.rules`` with ``fired`` set, so no engine fires it again.

The key is ``kafka.record_signing_key`` (a PEM Ed25519 private key), which the job reads
from ``kafka.record_key_file`` when a task opens, so it never travels in the job graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dexorder.contracts.events import Notification, encode_event
from dexorder.contracts.rules import (
    OrderTrigger,
    RuleFired,
    RuleRecord,
    encode_fired,
    encode_record,
    notification_kind,
)
from dexorder.record_signing import ForgedRecord, RecordKeys, signed_record, verify_record
from dexorder.topics import MARKET_RULES, NOTIFICATIONS, RULES_FIRED
from streaming.flink.config import ConfigError


class KafkaRecord(msgspec.Struct, frozen=True):
    """One record to produce: its topic, key, value and headers."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, bytes]


def job_record_keys(path: str | None, where: str = "kafka.record_key_file") -> RecordKeys:
    """The record keys from the PEM private key in ``path``; :class:`ConfigError` if unset,
    unreadable or not an Ed25519 private key."""
    if not path:
        raise ConfigError(
            f"{where} must be set: the functions act only on records signed by the platform"
        )
    try:
        pem = Path(path).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where}: not an Ed25519 key")
    return RecordKeys(key.public_key(), key)


def rule_record_problem(
    keys: RecordKeys,
    value: bytes | None,
    headers: Mapping[str, bytes] | None,
    topic: str = MARKET_RULES,
) -> str | None:
    """Why a ``market.rules`` record must be dropped (its signature), or None."""
    try:
        verify_record(keys, topic, value or b"", list((headers or {}).items()))
    except ForgedRecord as exc:
        return str(exc)
    return None


def _signed(keys: RecordKeys, topic: str, key: bytes, value: bytes) -> KafkaRecord:
    return KafkaRecord(topic, key, value, dict(signed_record(keys, topic, value)))


def fired_records(
    fired: RuleFired,
    keys: RecordKeys,
    notifications: str = NOTIFICATIONS,
    rules_fired: str = RULES_FIRED,
    rules: str = MARKET_RULES,
) -> list[KafkaRecord]:
    """What a firing becomes on Kafka, each record signed for its topic: the notification
    (event id the rule's, so a firing replayed after a crash reaches the person once), an
    order's ``rules.fired`` record (keyed by person), and the rule written back fired."""
    user = fired.rule.user.encode()
    note = Notification(
        event_id=fired.event_id,
        user=fired.rule.user,
        kind=notification_kind(fired.rule),
        payload=msgspec.to_builtins(fired),
        created_at=fired.fired_at,
    )
    out = [_signed(keys, notifications, user, encode_event(note))]
    if isinstance(fired.rule.condition, OrderTrigger):
        out.append(_signed(keys, rules_fired, user, encode_fired(fired)))
    back = encode_record(RuleRecord(rule=fired.rule, fired=fired))
    out.append(_signed(keys, rules, fired.rule.id.encode(), back))
    return out
