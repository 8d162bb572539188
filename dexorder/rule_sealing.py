"""Fired market rules on the relay's public fanout, readable only by platform parts.

The stream engines publish every fired rule live on the relay's XPUB, which is one
fanout for everyone: libzmq's proxy cannot filter per subscriber, and ZeroMQ
subscriptions are prefixes, so anyone holding a subscriber key (every person's agent
does) could subscribe to ``RULE:`` and read everybody's alerts and order triggers. So the
message is sealed, and the topic does not name the person:

- topic ``RULE:{tag}``: ``tag`` is HMAC-SHA256 of the user id under a key derived from
  the platform secret, truncated to 128 bits, base64url (22 characters, every tag the same
  length, so one person's topic is never a prefix of another's);
- payload: one version byte, a random 96-bit nonce, then the :class:`RuleFired` JSON
  sealed with AES-256-GCM under a second key derived from the same secret; the topic is
  the associated data, so a sealed message replayed under another person's topic does not
  open.

Only parts holding the platform secret (``relay.rule_seal_key``: the stream runner, the
Flink job, the gateway; never agents) can find a person's topic (:meth:`RuleSealer.topic_for`)
or read what is on it (:meth:`RuleSealer.open`). Without it a subscriber sees tags that
change with the secret and ciphertext.

This module imports nothing of the platform's settings (the Flink job's environment has
no pydantic); :func:`rule_sealer` reads them lazily.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dexorder.contracts.rules import BadRule, RuleFired, decode_fired, encode_fired
from dexorder.secret_files import secret_file
from dexorder.topics import RULE_FIRED_PREFIX

if TYPE_CHECKING:
    from dexorder.config import Settings

#: Every fired-rule topic starts with this (a platform subscriber may take them all).
PREFIX = RULE_FIRED_PREFIX
#: The shortest platform secret accepted (characters): a human-chosen word is not one.
MIN_SECRET_CHARS = 32
_TAG_LABEL = b"dexorder-rule-topic-tag-v1"
_SEAL_LABEL = b"dexorder-rule-seal-v1"
_AAD = b"dexorder-rule-fired-v1\x00"
_VERSION = b"\x01"
_NONCE = 12
_TAG_BYTES = 16
#: version + nonce + GCM tag: the smallest sealed payload
_OVERHEAD = len(_VERSION) + _NONCE + 16


class BadSealKey(ValueError):
    """The platform secret is missing or too weak; the message says which and where."""


class BrokenSeal(ValueError):
    """A message on ``RULE:`` that does not open with the platform secret: tampered with,
    moved to another topic, or sealed under another secret."""


def new_secret() -> str:
    """A fresh platform secret (256 bits, base64url)."""
    return secrets.token_urlsafe(32)


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


@dataclass(frozen=True)
class RuleSealer:
    """Seals and opens fired rules for the relay; made from the platform secret."""

    _tag_key: bytes = field(repr=False)
    _aead: AESGCM = field(repr=False)

    @classmethod
    def from_secret(cls, secret: str | None, where: str = "relay.rule_seal_key") -> RuleSealer:
        """The sealer of ``secret``; :class:`BadSealKey` naming ``where`` if it is missing or
        shorter than :data:`MIN_SECRET_CHARS`."""
        value = (secret or "").strip()
        if not value:
            raise BadSealKey(
                f"{where}: missing; fired rules go to the relay only sealed with it "
                "(a platform secret of at least 32 characters)"
            )
        if len(value) < MIN_SECRET_CHARS:
            raise BadSealKey(
                f"{where}: {len(value)} characters; at least {MIN_SECRET_CHARS} are needed"
            )
        raw = value.encode()
        return cls(_derive(raw, _TAG_LABEL), AESGCM(_derive(raw, _SEAL_LABEL)))

    def topic_for(self, user: str) -> str:
        """Person ``user``'s fired-rule topic on the relay (what a platform part subscribes
        to for one person's live feed)."""
        digest = hmac.new(self._tag_key, user.encode(), hashlib.sha256).digest()
        tag = base64.urlsafe_b64encode(digest[:_TAG_BYTES]).rstrip(b"=").decode()
        return f"{PREFIX}{tag}"

    def seal(self, fired: RuleFired) -> tuple[str, bytes]:
        """(topic, payload) for publishing ``fired`` on the relay: the topic is its person's
        (``fired.rule.user``), so a rule is never sealed under someone else's."""
        topic = self.topic_for(fired.rule.user)
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, encode_fired(fired), _AAD + topic.encode())
        return topic, _VERSION + nonce + sealed

    def open(self, topic: str | bytes, payload: bytes) -> RuleFired:
        """The fired rule sealed in ``payload`` on ``topic``; :class:`BrokenSeal` when it
        does not open (any byte of either changed, another person's topic, another secret)
        or opens to something that is not that person's fired rule."""
        name = topic.decode(errors="replace") if isinstance(topic, bytes) else topic
        if not name.startswith(PREFIX):
            raise BrokenSeal(f"{name[:40]!r} is not a fired-rule topic")
        if len(payload) < _OVERHEAD or payload[:1] != _VERSION:
            raise BrokenSeal(f"not a sealed fired rule on {name}")
        nonce, sealed = payload[1 : 1 + _NONCE], payload[1 + _NONCE :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _AAD + name.encode())
        except InvalidTag:
            raise BrokenSeal(
                f"the fired rule on {name} does not open: tampered with, moved from "
                "another topic, or sealed under another secret"
            ) from None
        try:
            fired = decode_fired(plain)
        except BadRule as exc:  # sealed by a holder of the secret: a platform bug, said plainly
            raise BrokenSeal(f"sealed on {name} but not a fired rule: {exc}") from None
        if self.topic_for(fired.rule.user) != name:
            raise BrokenSeal(f"the fired rule on {name} belongs to another person's topic")
        return fired


def secret_from_file(path: str | Path, where: str) -> str:
    """The platform secret kept in ``path`` (the Flink job's mounted Secret);
    :class:`BadSealKey` if the file cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise BadSealKey(f"{where}: cannot read {path}: {exc.strerror or exc}") from None


def rule_sealer(cfg: Settings) -> RuleSealer:
    """This platform part's sealer: ``relay.rule_seal_key``, or (one machine) the secret in
    ``state/relay/rule_seal.key`` made on first use. A configured secret that is not one is
    a :class:`~dexorder.config.ConfigError`."""
    from dexorder.config import ConfigError  # pydantic: not in the Flink job's environment

    configured = cfg.relay.rule_seal_key
    try:
        if configured is not None:
            return RuleSealer.from_secret(configured, "relay.rule_seal_key")
        path = Path(cfg.home) / "state" / "relay" / "rule_seal.key"
        return RuleSealer.from_secret(secret_file(path, new_secret), str(path))
    except BadSealKey as exc:
        raise ConfigError(str(exc)) from None
