"""Publishing into the relay's XSUB from a Flink task, with the ``stream`` part's CURVE keys.

:mod:`dexorder.relay_keys` reads keys through the platform's settings (pydantic, the state
folder), which the job's own environment does not carry; the job is given the two keys it
needs (the relay's public key, a file with its own secret key) and this module does the
CURVE client setup itself.

Fired rules go out sealed (:mod:`dexorder.rule_sealing`): :func:`job_sealer` reads the
platform secret from the job's ``relay.rule_seal_key_file``.

The socket is an XPUB (it sends like a PUB): it also hears the relay's subscriptions, so
:meth:`RelayPublisher.wait_subscribed` can wait until the relay listens before the first
message goes out, instead of losing what a PUB sends before the handshake completes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import zmq

from dexorder.curve_key import curve_key
from dexorder.rule_sealing import BadSealKey, RuleSealer, secret_from_file
from dexorder.schemas import Candle, encode
from dexorder.topics import ohlc_topic
from streaming.flink.config import ConfigError, RelayIO


def _z85(value: str, where: str) -> bytes:
    try:
        return curve_key(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def job_sealer(cfg: RelayIO) -> RuleSealer:
    """The sealer of the secret in ``cfg.rule_seal_key_file``; :class:`ConfigError` when the
    file is not set, not readable, or holds no secret fit for it."""
    where = "relay.rule_seal_key_file"
    if not cfg.rule_seal_key_file:
        raise ConfigError(f"{where} must be set: fired rules go to the relay only sealed")
    try:
        return RuleSealer.from_secret(secret_from_file(cfg.rule_seal_key_file, where), where)
    except BadSealKey as exc:
        raise ConfigError(str(exc)) from None


class RelayPublisher:
    """One task's connection to the relay's XSUB."""

    def __init__(self, cfg: RelayIO) -> None:
        self._cfg = cfg
        self._ctx = zmq.Context()
        sock: zmq.Socket[Any] = self._ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        if cfg.server_key or cfg.secret_key_file:
            if not (cfg.server_key and cfg.secret_key_file):
                raise ConfigError("relay: server_key and secret_key_file go together")
            secret = _z85(Path(cfg.secret_key_file).read_text(), "relay.secret_key_file")
            sock.setsockopt(zmq.CURVE_SERVERKEY, _z85(cfg.server_key, "relay.server_key"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, zmq.curve_public(secret))
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        sock.connect(cfg.address)
        self._sock = sock

    def wait_subscribed(self, timeout_ms: int | None = None) -> bool:
        """Wait (up to the configured time) for the relay's first subscription."""
        wait = self._cfg.subscribe_wait_ms if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + wait / 1000
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                return False
            msg = self._sock.recv()
            if msg[:1] == b"\x01":
                return True

    def candle(self, candle: Candle) -> None:
        """Publish a candle (open or closed) on ``{ticker}|ohlc:{timeframe}``."""
        self.send(ohlc_topic(candle.ticker, candle.timeframe), encode(candle))

    def send(self, topic: str, data: bytes) -> None:
        self._sock.send_multipart([topic.encode(), data])

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()
