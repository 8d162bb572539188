"""The Flink job's configuration: one typed struct, read from YAML with command-line overrides.

``python -m streaming.flink.job --config job.yaml [--set key=value ...]``; keys are the
fields below, dotted for the nested ones (``--set kafka.bootstrap=kafka:9092``). Every value
is checked by msgspec against its type: a typo or a wrong type is a clear error naming the
field, never a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml

from dexorder.market_validation import DEFAULT_MAX_SKEW_MS
from dexorder.topics import (
    MARKET_CANDLES,
    MARKET_RULES,
    MARKET_TICKS,
    NOTIFICATIONS,
    RULES_FIRED,
)

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ConfigError(ValueError):
    """A configuration that is not one; the message names the field."""


class FileIO(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Local files (``make flink-job``, the tests): JSON lines in, JSON lines out.

    ``ticks``: one :class:`~dexorder.schemas.Tick` per line (``{"type": "tick", ...}``), read
    in file order. ``rules``: one :class:`~dexorder.contracts.rules.RuleRecord` per line, the
    rules in force from the start (what the cluster job reads from the compacted
    ``market.rules`` topic). ``out``: a folder; closed candles go to ``out/candles/``, fired
    rules to ``out/fired/``, as files of JSON lines committed at each checkpoint.
    """

    ticks: str
    rules: str | None = None
    out: str


class KafkaIO(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The cluster: Kafka through Flink's Kafka SQL connector (its jar is ``connector_jar``,
    or the ``FLINK_KAFKA_CONNECTOR_JAR`` environment variable)."""

    bootstrap: str
    group_id: str = "dexorder-flink"
    connector_jar: str | None = None
    ticks_topic: str = MARKET_TICKS
    candles_topic: str = MARKET_CANDLES
    rules_topic: str = MARKET_RULES
    notifications_topic: str = NOTIFICATIONS
    fired_topic: str = RULES_FIRED
    #: where the ticks are read from on a first start (later: the checkpointed offsets)
    startup: Literal["group-offsets", "earliest-offset", "latest-offset"] = "group-offsets"
    #: exactly-once writes (Kafka transactions committed with each checkpoint)
    exactly_once: bool = True
    transactional_id_prefix: str = "dexorder-flink"
    #: a file holding ``kafka.record_signing_key`` (PEM Ed25519 private key; in the cluster
    #: from the stream part's Secret): ``market.rules`` records are checked with it and the
    #: records a fired rule becomes are signed with it (:mod:`streaming.flink.records`)
    record_key_file: str | None = None
    #: as the platform's ``kafka`` section (dexorder/kafka_auth.py): in the cluster SASL_SSL
    #: with the stream part's principal; the password and the CA come as files (the pod's
    #: init container writes them from the Secret and the platform's ConfigMap)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        given = (self.sasl_mechanism, self.sasl_username, self.sasl_password_file)
        if sasl and not all(given):
            raise ConfigError(
                f"kafka: security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password_file"
            )
        if not sasl and any(given):
            raise ConfigError(
                "kafka: SASL settings need security_protocol SASL_SSL or SASL_PLAINTEXT"
            )
        if self.ssl_cafile and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ConfigError("kafka: ssl_cafile needs security_protocol SSL or SASL_SSL")

    def client_properties(self) -> dict[str, str]:
        """The Kafka client properties of the connector's security (``properties.*`` in a
        table's WITH clause); the password file is read now."""
        props: dict[str, str] = {"security.protocol": self.security_protocol}
        if self.ssl_cafile:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = self.ssl_cafile
        if self.sasl_mechanism and self.sasl_username and self.sasl_password_file:
            password = Path(self.sasl_password_file).read_text().removesuffix("\n")
            # the SQL connector jar shades the Kafka client: its login modules are renamed
            module = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security." + (
                "plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "scram.ScramLoginModule"
            )
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (
                f'{module} required username="{_jaas(self.sasl_username)}" '
                f'password="{_jaas(password)}";'
            )
        return props


def _jaas(value: str) -> str:
    """A JAAS option value inside double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


class RelayIO(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The relay's XSUB: live candle updates, closed candles and fired alerts go there.

    ``server_key`` is the relay's CURVE public key (Z85), ``secret_key_file`` a file holding
    the ``stream`` part's CURVE secret key (Z85; in the cluster a mounted Secret). Both unset:
    connect without CURVE (only for a relay stand-in in a test).

    ``rule_seal_key_file``: a file holding the platform secret ``relay.rule_seal_key`` (in
    the cluster from the same Secret): fired rules go to the relay only sealed with it
    (:mod:`dexorder.rule_sealing`), so the job needs it whenever it publishes.
    """

    address: str
    server_key: str | None = None
    secret_key_file: str | None = None
    rule_seal_key_file: str | None = None
    #: how long a publisher waits in ``open()`` for the relay's subscription before sending
    subscribe_wait_ms: NonNegative = 2_000

    def __post_init__(self) -> None:
        if bool(self.server_key) != bool(self.secret_key_file):
            # refused when the job starts, not when its first task opens the socket
            raise ConfigError("relay: server_key and secret_key_file go together")


class Checkpoints(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    interval_ms: Annotated[int, msgspec.Meta(ge=10)] = 10_000
    #: ``execution.checkpointing.dir``: a local path or a URI (``s3://...`` in the cluster)
    dir: str | None = None
    mode: Literal["exactly-once", "at-least-once"] = "exactly-once"


class JobConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole job: one of ``files``/``kafka``, optionally ``relay``, and the fold's knobs."""

    files: FileIO | None = None
    kafka: KafkaIO | None = None
    relay: RelayIO | None = None
    checkpoints: Checkpoints = msgspec.field(default_factory=Checkpoints)
    parallelism: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    allowed_lateness_ms: NonNegative = 2_000
    max_skew_ms: NonNegative = DEFAULT_MAX_SKEW_MS
    #: processing-time close of a quiet ticker's candles, checked this often (0: off). Off for
    #: a replay of old ticks, whose event time has nothing to do with the wall clock; on in
    #: the cluster (e.g. 1000). Unlike the local runner, which idles only once it has read
    #: all its input, a timer cannot know whether the ticker's ticks wait unread in a
    #: backlog: catching up after downtime, a candle can close before its last ticks are
    #: read (they are then late, counted and dropped).
    idle_close_ms: NonNegative = 0
    #: open-candle updates to the relay at most this often per ticker (the last one of a
    #: burst is sent when the interval ends)
    live_update_interval_ms: NonNegative = 250
    job_name: str = "dexorder-stream"
    #: tickers whose state a Python worker keeps as live objects (``python.state.cache-size``,
    #: Flink's default); the others are fetched from and written to Flink's state backend, as
    #: their MessagePack snapshot, on each use: a tick of such a ticker costs a state round
    #: trip and a snapshot, tens of times a cached one. Size it above a subtask's tickers.
    state_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 1000

    def __post_init__(self) -> None:
        if (self.files is None) == (self.kafka is None):
            raise ConfigError("exactly one of files and kafka must be set")
        if self.relay is not None and not self.relay.rule_seal_key_file:
            raise ConfigError(
                "relay.rule_seal_key_file must be set: fired rules go to the relay only "
                "sealed with the platform secret (relay.rule_seal_key)"
            )


def _set(tree: dict[str, object], dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    node = tree
    for part in path:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is not a section")
        node = child
    node[last] = yaml.safe_load(value)


def load(path: str | Path | None, overrides: list[str] = []) -> JobConfig:  # noqa: B006
    """Read ``path`` (YAML; None: start empty) and apply ``key=value`` overrides."""
    tree: object = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        _set(tree, key.strip(), value)
    try:
        return msgspec.convert(tree, JobConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"job configuration: {exc}") from None


def encode(config: JobConfig) -> bytes:
    """The configuration as YAML-compatible JSON (for a subprocess's ``--config``)."""
    return msgspec.json.encode(config)
