"""How a part connects to Kafka: where, and with which security (TLS, SASL).

One machine: the embedded broker, plaintext, nothing to set. The cluster: Kafka wants
SASL (SCRAM-SHA-512 over TLS, knative/README.md) and every part has its own principal.
:class:`KafkaConnection` is what the client factories of :mod:`dexorder.kafka` take
(a bare ``host:port`` string still means plaintext), so every producer, consumer and
admin client a part makes gets the same settings. No aiokafka import here: the
configuration imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaAuthError(ValueError):
    """Security settings that cannot work together (the message names the key)."""


@dataclass(frozen=True)
class KafkaConnection:
    """A Kafka cluster's address and the credentials this part connects with."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    #: kept out of reprs and logs
    sasl_password: str | None = field(default=None, repr=False)
    #: the CA certificate (PEM file) the brokers' TLS certificates are checked against;
    #: unset with TLS: the system's CAs
    ssl_cafile: str | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def check(self) -> None:
        """Raise :class:`KafkaAuthError` for settings no client could connect with."""
        if self.uses_sasl:
            missing = [
                key
                for key, value in (
                    ("kafka.sasl_mechanism", self.sasl_mechanism),
                    ("kafka.sasl_username", self.sasl_username),
                    ("kafka.sasl_password (or kafka.sasl_password_file)", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise KafkaAuthError(
                    f"kafka.security_protocol {self.security_protocol} needs {', '.join(missing)}"
                )
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise KafkaAuthError(
                f"SASL settings are given but kafka.security_protocol is {self.security_protocol}"
                " (SASL_SSL or SASL_PLAINTEXT uses them)"
            )
        if self.ssl_cafile is not None:
            if not self.uses_tls:
                raise KafkaAuthError(
                    "kafka.ssl_cafile is given but kafka.security_protocol uses no TLS"
                )
            if not Path(self.ssl_cafile).is_file():
                raise KafkaAuthError(f"kafka.ssl_cafile {self.ssl_cafile} is not a file")


def read_secret_file(path: str, key: str) -> str:
    """A secret from a mounted file (a Kubernetes Secret's key), without its last newline."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KafkaAuthError(f"{key}: cannot read {path}: {exc.strerror}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise KafkaAuthError(f"{key}: {path} is empty")
    return value
