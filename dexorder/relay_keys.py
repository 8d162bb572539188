"""Who may publish into the relay's fanout: ZeroMQ CURVE keys and the sockets that use them.

The relay's XSUB (publishers in) is a CURVE server: a publisher must prove it holds a
secret key whose public key is on the relay's allowlist, or the handshake fails and
nothing it sends reaches a subscriber. Without this, anything that can reach the port
(a person's sandbox on the same machine, say) could publish a fake candle or a fake
``HISTORY_READY``.

**One key pair per publishing part** (``stream``, ``lake-writer``, ``ingestor``) rather
than one platform publisher key: in the cluster each Deployment mounts only its own
secret, so the most exposed part (the ingestor, which parses exchange payloads) can be
struck off the allowlist without re-keying the others, and the relay logs which part's
key each publisher used. Every ingestor (one per exchange) shares the ``ingestor`` key.

Where keys come from: ``relay.*`` configuration in the cluster (each part's own secret
key, the relay's public key, the relay's allowlist); on one machine, files under
``$DEXORDER_HOME/state/relay/`` (mode 0600) made on first use, as the token key is.
Agents and their sandboxes never load this module's keys: subscribing needs no
publisher key, and in the cluster (``relay.curve_subscribers``) a subscriber key only
lets its holder read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from dexorder.config import ConfigError, Settings
from dexorder.curve_key import curve_key
from dexorder.secret_files import secret_file

#: The parts that publish into the relay's XSUB (grep for ``relay_xsub``).
PUBLISHERS = ("stream", "lake-writer", "ingestor")
#: ZAP domains, so the relay's authenticator tells its two doors apart.
PUBLISHER_DOMAIN = "dexorder-relay-publishers"
SUBSCRIBER_DOMAIN = "dexorder-relay-subscribers"
#: The subscriber key's name on one machine (with ``relay.curve_subscribers`` on).
SUBSCRIBER = "subscriber"


@dataclass(frozen=True)
class CurveKeypair:
    """A CURVE key pair, both halves Z85-encoded (40 characters)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class RelayPublisher:
    """Where a publisher connects, and the keys it proves itself with."""

    address: str
    server_key: bytes
    keys: CurveKeypair


@dataclass(frozen=True)
class RelayServerKeys:
    """What the relay needs: its own key pair and whom it lets in, by public key → name.

    ``subscribers`` None leaves XPUB open (one machine: local subscribers on loopback).
    """

    server: CurveKeypair
    publishers: Mapping[bytes, str]
    subscribers: Mapping[bytes, str] | None = None


def _z85_key(value: str, where: str) -> bytes:
    try:
        return curve_key(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def keypair_from_secret(secret: str, where: str = "relay key") -> CurveKeypair:
    s = _z85_key(secret, where)
    return CurveKeypair(zmq.curve_public(s), s)


def _key_dir(cfg: Settings) -> Path:
    return Path(cfg.home) / "state" / "relay"


def _stored_keypair(cfg: Settings, name: str) -> CurveKeypair:
    """The key pair kept in ``state/relay/<name>.key`` (0600), made on first use."""
    path = _key_dir(cfg) / f"{name}.key"
    return keypair_from_secret(
        secret_file(path, lambda: zmq.curve_keypair()[1].decode()), str(path)
    )


def server_public_key(cfg: Settings) -> bytes:
    """The relay's public key, which every part connecting to it pins."""
    r = cfg.relay
    if r.server_public_key:
        return _z85_key(r.server_public_key, "relay.server_public_key")
    return server_keys(cfg).public


def server_keys(cfg: Settings) -> CurveKeypair:
    """The relay's own key pair (the relay only)."""
    if cfg.relay.server_secret_key:
        return keypair_from_secret(cfg.relay.server_secret_key, "relay.server_secret_key")
    return _stored_keypair(cfg, "server")


def publisher_keys(cfg: Settings, part: str) -> CurveKeypair:
    """The key pair part ``part`` publishes with: configured, or its file under state/."""
    if part not in PUBLISHERS:
        raise ValueError(f"{part!r} is not a relay publisher (one of {', '.join(PUBLISHERS)})")
    if cfg.relay.publisher_secret_key:
        return keypair_from_secret(cfg.relay.publisher_secret_key, "relay.publisher_secret_key")
    return _stored_keypair(cfg, f"publisher-{part}")


def publisher(cfg: Settings, part: str) -> RelayPublisher:
    """Everything part ``part`` needs to publish into the relay's XSUB."""
    return RelayPublisher(
        cfg.relay.xsub_address,
        server_public_key(cfg),
        publisher_keys(cfg, part),
    )


def relay_server_keys(cfg: Settings) -> RelayServerKeys:
    """The relay's key pair and allowlists: configured, or (one machine) the files under state/."""
    r = cfg.relay
    if r.allowed_publishers:
        publishers = {
            _z85_key(v, f"relay.allowed_publishers.{k}"): k for k, v in r.allowed_publishers.items()
        }
    else:
        publishers = {_stored_keypair(cfg, f"publisher-{p}").public: p for p in PUBLISHERS}
    subscribers: dict[bytes, str] | None = None
    if r.curve_subscribers:
        if r.allowed_subscribers:
            subscribers = {
                _z85_key(v, f"relay.allowed_subscribers.{k}"): k
                for k, v in r.allowed_subscribers.items()
            }
        else:
            subscribers = {_stored_keypair(cfg, SUBSCRIBER).public: SUBSCRIBER}
    return RelayServerKeys(server_keys(cfg), publishers, subscribers)


def _as_client(sock: zmq.Socket[Any], server_key: bytes, keys: CurveKeypair) -> None:
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def connect_publisher(sock: zmq.Socket[Any], target: RelayPublisher | str) -> None:
    """Connect a PUB socket to the relay's XSUB with its part's CURVE keys.

    A bare address connects without keys, for a benchmark or test with no relay there;
    a real relay refuses such a publisher.
    """
    if isinstance(target, str):
        sock.connect(target)
        return
    _as_client(sock, target.server_key, target.keys)
    sock.connect(target.address)


def connect_subscriber(sock: zmq.Socket[Any], cfg: Settings) -> None:
    """Connect a SUB socket to the relay's XPUB, with the subscriber key when one is needed."""
    r = cfg.relay
    if r.curve_subscribers:
        if r.subscriber_secret_key:
            keys = keypair_from_secret(r.subscriber_secret_key, "relay.subscriber_secret_key")
        else:
            keys = _stored_keypair(cfg, SUBSCRIBER)
        _as_client(sock, server_public_key(cfg), keys)
    sock.connect(r.xpub_address)


def serve_curve(sock: zmq.Socket[Any], server: CurveKeypair, domain: str) -> None:
    """Make ``sock`` (before it binds) a CURVE server whose clients the ZAP handler checks."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, server.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, server.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
