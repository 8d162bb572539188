"""Configuration: ``config.yaml`` + ``secrets.yaml`` + environment variables.

Precedence, highest first: environment (``DEXORDER_<SECTION>__<KEY>``, plus the
conventional ``KAFKA_BOOTSTRAP_SERVERS``), ``secrets.yaml``, ``config.yaml``,
defaults. Both files are looked up in ``DEXORDER_HOME`` (default
``~/.dexorder``) unless ``DEXORDER_CONFIG`` / ``DEXORDER_SECRETS`` name them.
Unknown keys and bad values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dexorder.kafka_auth import (
    KafkaAuthError,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
    read_secret_file,
)


class ConfigError(ValueError):
    """Invalid configuration; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaConfig(_Section):
    #: ``host:port[,host:port]``; unset means ``dexorder up`` starts the embedded broker.
    bootstrap_servers: str | None = None
    embedded_port: int = Field(9092, ge=1, le=65535)
    #: Ed25519 PEM keys signing the records that make a platform function act
    #: (``notifications``, ``backfill.requests``, ``tool.calls``; dexorder/record_signing.py):
    #: the private key for the parts that produce them, the public key for those that
    #: deliver or act on them. Unset (one machine): state/kafka_record_ed25519.pem.
    record_signing_key: str | None = None
    record_verify_key: str | None = None
    #: How the parts connect (dexorder/kafka_auth.py): plaintext on one machine; in the
    #: cluster SASL_SSL with each part's own principal (knative/README.md).
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    #: The SASL password: in secrets.yaml only (refused in config.yaml), or ...
    sasl_password: str | None = None
    #: ... a file holding it (a mounted Secret's key, e.g. a Strimzi KafkaUser's password).
    sasl_password_file: str | None = None
    #: The CA (PEM file) the brokers' TLS certificates are checked against; unset: the system's.
    ssl_cafile: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> KafkaConfig:
        if self.sasl_password and self.sasl_password_file:
            raise ValueError("give kafka.sasl_password or kafka.sasl_password_file, not both")
        return self

    def brokers(self) -> str:
        """``bootstrap_servers`` for a part that needs Kafka; unset is a :class:`ConfigError`
        (the parts run under ``dexorder up``, which sets it)."""
        if not self.bootstrap_servers:
            raise ConfigError("kafka.bootstrap_servers is not set (dexorder up sets it)")
        return self.bootstrap_servers

    def connection(self) -> KafkaConnection:
        """Where and how the parts connect (every Kafka client takes it: dexorder/kafka.py);
        the password file is read now. Settings that cannot work are a :class:`ConfigError`."""
        try:
            password = self.sasl_password
            if self.sasl_password_file:
                password = read_secret_file(self.sasl_password_file, "kafka.sasl_password_file")
            conn = KafkaConnection(
                self.brokers(),
                security_protocol=self.security_protocol,
                sasl_mechanism=self.sasl_mechanism,
                sasl_username=self.sasl_username,
                sasl_password=password,
                ssl_cafile=self.ssl_cafile,
            )
            conn.check()
        except KafkaAuthError as exc:
            raise ConfigError(str(exc)) from None
        return conn


def tcp_address(host: str, port: int) -> str:
    """A ZeroMQ TCP endpoint."""
    return f"tcp://{host}:{port}"


class RelayConfig(_Section):
    """The relay's four ZeroMQ channels (DESIGN.md) and its keys; parts connect to the
    ``*_address`` properties, the one place the endpoints are built."""

    host: str = "127.0.0.1"
    router_port: int = Field(5559, ge=1, le=65535)
    work_port: int = Field(5555, ge=1, le=65535)
    xsub_port: int = Field(5557, ge=1, le=65535)
    xpub_port: int = Field(5558, ge=1, le=65535)
    health_port: int = Field(5560, ge=1, le=65535)
    # CURVE keys (Z85, see dexorder/relay_keys.py). Unset on one machine: made on first
    # use under state/relay/. In the cluster each part gets only the ones it needs.
    #: The relay's own secret key (the relay only) and its public key (every part connecting).
    server_secret_key: str | None = None
    server_public_key: str | None = None
    #: This part's own key for publishing into XSUB (stream runner, lake writer, ingestor).
    publisher_secret_key: str | None = None
    #: The relay's allowlist of publishers, part name → public key (empty: state/relay/).
    allowed_publishers: dict[str, str] = {}
    #: Subscribers on XPUB need a key too (the cluster); off on one machine, where
    #: `dexorder watch`, the client and agents subscribe on loopback with no key.
    curve_subscribers: bool = False
    subscriber_secret_key: str | None = None
    allowed_subscribers: dict[str, str] = {}
    #: The platform secret sealing fired rules on the fanout (``RULE:{tag}``,
    #: dexorder/rule_sealing.py): the stream engines and the gateway, never agents (the
    #: fanout is one for everyone). Unset (one machine): state/relay/rule_seal.key.
    rule_seal_key: str | None = None

    @property
    def router_address(self) -> str:
        """ROUTER: client requests (backfill, realtime)."""
        return tcp_address(self.host, self.router_port)

    @property
    def work_address(self) -> str:
        """PUB: the ingestors' work queue, topic = exchange prefix."""
        return tcp_address(self.host, self.work_port)

    @property
    def xsub_address(self) -> str:
        """XSUB: publishers in (CURVE, allowlisted keys)."""
        return tcp_address(self.host, self.xsub_port)

    @property
    def xpub_address(self) -> str:
        """XPUB: subscribers out."""
        return tcp_address(self.host, self.xpub_port)


class EmulatorConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    seed: int = 42
    #: Mean simulated trades per second per symbol.
    trade_rate: float = Field(4.0, ge=0)
    #: Requests weight allowed per minute before HTTP 429, as Binance does.
    weight_limit_per_minute: int = Field(6000, ge=1)


class ExchangeConfig(_Section):
    """One exchange an ingestor serves."""

    #: Relay prefix and ticker exchange name, e.g. ``BINANCE``.
    name: str = "BINANCE"
    #: CCXT exchange id.
    ccxt_id: str = "binance"
    #: Point CCXT at the built-in exchange emulator instead of the real exchange.
    emulated: bool = True
    #: ``auto``: the exchange's WebSocket where CCXT has one, REST polling otherwise.
    transport: Literal["auto", "websocket", "polling"] = "auto"
    poll_interval_ms: int = Field(1_000, ge=50)
    #: Tickers streamed from start; more can be asked for with a ``RealtimeRequest``.
    symbols: list[str] = ["BTC/USDT", "ETH/USDT"]
    #: How several ingestors of one exchange share tickers (see README).
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)
    health_port: int = Field(5561, ge=1, le=65535)
    #: Read the spot trade stream straight from the exchange's WebSocket, without
    #: CCXT's per-trade parsing (a core at 10,000 trades/s); CCXT still loads markets,
    #: backfills and fills gaps. Unset: on for Binance-protocol exchanges (ccxt_id
    #: ``binance``, ``binanceus``), the only ones it may be set for.
    native_trade_stream: bool | None = None

    @model_validator(mode="after")
    def _native_only_for_binance(self) -> ExchangeConfig:
        # services.ingestor.binance_trades.BINANCE_PROTOCOL; config does not import services
        if self.native_trade_stream and self.ccxt_id not in ("binance", "binanceus"):
            raise ValueError(
                f"native_trade_stream is for Binance-protocol exchanges, not {self.ccxt_id!r}"
            )
        return self


class StreamConfig(_Section):
    group_id: str = "dexorder-stream"
    #: Ticks up to this much older than the newest tick of their ticker still count.
    allowed_lateness_ms: int = Field(2_000, ge=0)
    #: Open-candle updates are coalesced per poll batch, and published at most this often.
    live_update_interval_ms: int = Field(0, ge=0)
    #: Longest a Kafka fetch may wait for new ticks; brokers may hold a fetch
    #: this long even when data arrives, so it bounds the added latency.
    fetch_max_wait_ms: int = Field(5, ge=0, le=500)
    #: How often state and offsets are checkpointed.
    checkpoint_interval_ms: int = Field(1_000, ge=50)
    health_port: int = Field(5562, ge=1, le=65535)


class MarketDataConfig(_Section):
    """What every reader of ticks and candles accepts (``dexorder/market_validation.py``)."""

    #: A tick or candle stamped further than this beyond the reader's wall clock is
    #: counted and dropped (exchange clocks differ from ours by milliseconds under NTP).
    max_clock_skew_ms: int = Field(5_000, ge=0, le=600_000)
    #: ``dexorder status`` calls a ticker stale (and the platform unhealthy) when its
    #: ingestor kept handing over trades for this long after the stream runner last
    #: took a tick of it.
    stale_after_s: float = Field(60.0, gt=0)


class LakeConfig(_Section):
    """The Iceberg lake of market history."""

    #: SQLAlchemy URL of the catalog; default SQLite under the home folder.
    #: PostgreSQL: ``postgresql+psycopg2://user@host/db``.
    catalog_uri: str | None = None
    #: Where data files go; default a folder under home. ``s3://bucket/path`` with
    #: ``s3.*`` keys in ``properties`` for an S3-compatible store.
    warehouse: str | None = None
    namespace: str = "market"
    #: Extra pyiceberg catalog properties (e.g. ``s3.endpoint``, ``s3.access-key-id``).
    properties: dict[str, str] = {}
    #: How often ``dexorder up`` compacts and expires snapshots (0: never).
    maintenance_interval_s: int = Field(300, ge=0)
    #: A (day, ticker) partition with this many data files is rewritten into one.
    compact_min_files: int = Field(8, ge=2)
    #: Snapshots older than this are expired (time travel reaches back this far).
    #: Every commit copies the table metadata, so its cost grows with the snapshots kept.
    snapshot_retention_hours: float = Field(1.0, ge=0)
    #: The newest this many snapshots are kept whatever their age.
    keep_snapshots: int = Field(10, ge=1)


class WriterConfig(_Section):
    """The Iceberg writer: batches bounded by rows and by time."""

    group_id: str = "dexorder-lake-writer"
    batch_rows: int = Field(100_000, ge=1)
    batch_ms: int = Field(1_000, ge=10)
    health_port: int = Field(5563, ge=1, le=65535)


class SandboxConfig(_Section):
    """Limits of ``run_python`` and of the person's indicators and strategies."""

    cpu_s: int = Field(10, ge=1)
    memory_mb: int = Field(1024, ge=128)
    wall_s: float = Field(30.0, gt=0)
    output_kb: int = Field(256, ge=1)
    #: size of the fresh in-memory scratch folder each run gets
    scratch_mb: int = Field(64, ge=1, le=4096)
    #: "kernel": every run in its own namespaces under bubblewrap with a seccomp filter;
    #: where that cannot be set up, the person's code is refused. "none" runs it as a
    #: plain limited process: for a single-user machine only (warned at every start).
    isolation: Literal["kernel", "none"] = "kernel"
    #: "mount": each run gets a fresh ``/proc`` of its own PID namespace. "none": no
    #: ``/proc`` at all (every other namespace and the filter stay): for a container whose
    #: runtime leaves ``/proc/sys`` read-only (``procMount: Default``, every Kubernetes
    #: pod), where the kernel refuses bubblewrap a fresh proc mount and the sandbox would
    #: not start (knative/README.md, "The person's code sandbox in an agent pod").
    proc: Literal["mount", "none"] = "mount"


class AuthLimitsConfig(_Section):
    """Throttling of sign-up, login and Telegram ``/link``: per client address, per account
    (by email, whether it exists or not) and per chat. Every refusal is a 429 with
    Retry-After that says nothing about the account."""

    #: Failures allowed before backoff; then the n-th further failure makes the next
    #: attempt wait backoff_base_s * 2**(n-1) seconds, at most backoff_max_s.
    free_failures: int = Field(3, ge=0)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: int = Field(300, ge=1)
    #: Failed logins of one account before it is locked for lockout_s.
    account_lockout_failures: int = Field(10, ge=1)
    #: Failed logins and refused sign-ups from one client address before it is locked
    #: (higher: one address may be a whole office behind NAT).
    address_lockout_failures: int = Field(50, ge=1)
    #: Wrong ``/link`` codes sent from one Telegram chat before it is locked.
    link_lockout_failures: int = Field(5, ge=1)
    lockout_s: int = Field(900, ge=1)
    #: How long a failure is remembered (counted from the first of a series).
    failure_window_s: int = Field(3600, ge=60)
    #: Sign-ups from one client address per hour.
    signups_per_hour: int = Field(10, ge=1)


class ModelPrice(_Section):
    """What a model costs, in US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class GatewayConfig(_Section):
    """The gateway: accounts, sessions, limits, chat channels, the model."""

    #: false: ``dexorder up`` does not start it.
    enabled: bool = True
    #: SQLAlchemy URL of the accounts database; default SQLite under the home folder.
    database_url: str | None = None
    #: Redis for rate limits, budgets and turn leases shared by replicas; unset: in-process.
    redis_url: str | None = None
    #: Prefix of the gateway's lease keys in Redis (replicas sharing one Redis use the same).
    redis_prefix: str = "dexorder:"
    #: How long a replica's hold on a person's turn (or agent start) lasts without renewal:
    #: a replica that dies mid-turn locks its person out at most this long (seconds).
    turn_lease_s: float = Field(30.0, gt=0, le=600)
    #: How long a replica that received a person's event waits for the replica holding
    #: their WebSocket to say it delivered it, before sending it to Telegram (seconds).
    replica_answer_s: float = Field(0.5, gt=0, le=30)
    #: How long a replica's record of holding a person's WebSocket lasts unrenewed (it is
    #: renewed every third of it): a replica that died stops being asked after this.
    presence_ttl_s: float = Field(15.0, ge=1, le=600)
    #: Signs login sessions (keep it in secrets.yaml); made under ``state/`` when unset.
    session_secret: str | None = None
    access_ttl_s: int = Field(900, ge=60, le=86_400)
    refresh_ttl_days: int = Field(30, ge=1)
    #: The longest life of any token the gateway makes or accepts (personal access
    #: tokens included: asking for a longer one, or one that never expires, is refused).
    max_token_ttl_days: int = Field(365, ge=1, le=3650)
    auth_limits: AuthLimitsConfig = AuthLimitsConfig()
    host: str = "127.0.0.1"
    #: The address people and MCP clients reach the gateway at (``https://...`` behind a
    #: proxy): the OAuth issuer and the ``/mcp`` resource are named by it; unset: ``url``.
    public_url: str | None = None
    #: HTTP + WebSocket chat, the web page, auth and the Telegram webhook.
    port: int = Field(8700, ge=0, le=65535)
    #: The ROUTER agents send critical events to.
    events_port: int = Field(5580, ge=0, le=65535)
    #: Health of the local trigger dispatcher (Kafka → the CloudEvents functions).
    triggers_health_port: int = Field(5564, ge=1, le=65535)
    #: The person ``dexorder chat`` speaks as on one machine.
    local_user: str = "local"
    #: The longest chat message accepted (characters).
    max_message_chars: int = Field(8000, ge=1, le=100_000)
    #: How long the agent's context resources are reused (seconds; 60-300).
    context_cache_s: int = Field(120, ge=0, le=300)
    #: Anthropic's API key (or ANTHROPIC_API_KEY); unset: the offline model answers.
    anthropic_api_key: str | None = None
    #: Anthropic's API address (a proxy, or a loopback server in tests).
    anthropic_base_url: str | None = None
    #: Models by (tier, complexity): the router picks from these.
    models: dict[str, dict[str, str]] = {
        "free": {"simple": "claude-haiku-4-5", "complex": "claude-haiku-4-5"},
        "pro": {"simple": "claude-haiku-4-5", "complex": "claude-sonnet-4-6"},
        "enterprise": {"simple": "claude-sonnet-4-6", "complex": "claude-opus-4-7"},
    }
    #: cost/speed: the tier's cheaper model always; quality: its better one; balanced: by
    #: how hard the request looks.
    model_strategy: Literal["balanced", "cost", "speed", "quality"] = "balanced"
    #: Retries of a model call the API turned away for a moment (429, 529 overloaded,
    #: 5xx): the Anthropic SDK's own (backoff from 0.5 s doubling to at most 8 s, minus up
    #: to 25 % jitter, or what the API's retry-after asks); then the tier's fallback model.
    model_retries: int = Field(2, ge=0, le=10)
    #: The longest ``retry-after`` a turn waits out while the person watches; an API
    #: asking for longer is treated as busy at once (the tier's fallback model answers).
    model_retry_after_max_s: float = Field(10.0, ge=0, le=120)
    #: What a turn falls back to when its model stays overloaded, by tier: the first of
    #: the tier's list that is not the model that failed (a tier not listed has none).
    fallback_models: dict[str, list[str]] = {
        "free": ["claude-sonnet-4-6"],
        "pro": ["claude-sonnet-4-6", "claude-haiku-4-5"],
        "enterprise": ["claude-opus-4-6", "claude-sonnet-4-6"],
    }
    #: Price of every model the router may pick (US$ per million tokens, input/output):
    #: what each model call costs is counted against the person's monthly budget.
    model_prices: dict[str, ModelPrice] = {
        "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0),
        "claude-sonnet-4-6": ModelPrice(input=3.0, output=15.0),
        "claude-opus-4-6": ModelPrice(input=5.0, output=25.0),
        "claude-opus-4-7": ModelPrice(input=5.0, output=25.0),
    }
    #: What a person's model calls may cost a month, by tier (US$; null: no budget). Free:
    #: about 200 short turns on Haiku. The local person of ``dexorder up`` is on free.
    monthly_budget_usd: dict[str, float | None] = {"free": 1.0, "pro": 25.0, "enterprise": None}
    #: Messages the agent folds into the conversation summary extractively before the
    #: model rewrites it (one call, after a turn; never with the offline model).
    summary_model_after: int = Field(20, ge=1, le=1000)
    #: Most model calls in one turn (each tool round is one).
    max_tool_rounds: int = Field(8, ge=1, le=50)
    #: Most write → validate → fix rounds of a workflow writing a strategy or indicator.
    workflow_rounds: int = Field(3, ge=1, le=10)
    #: How long the tool proxy keeps a call's reply for redeliveries of its event (seconds).
    tool_call_memory_s: int = Field(86_400, ge=60)
    #: A call claimed this long ago without a reply died midway (its pod was killed): it is
    #: answered with an error, never run again. Over the tool proxy's timeoutSeconds (450).
    tool_call_lease_s: int = Field(480, ge=1)
    #: Telegram bot token (BotFather); unset: no Telegram channel.
    telegram_bot_token: str | None = None
    #: The secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (setWebhook's secret_token).
    telegram_webhook_secret: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    #: Global knowledge (platform docs) for the model; default: the docs shipped with the gateway.
    knowledge_dir: str | None = None
    #: Qdrant server URL for the knowledge base; unset: embedded under ``state/``.
    qdrant_url: str | None = None
    #: Who runs people's agents: "local" (a subprocess each, this machine) or "knative"
    #: (a Knative Service each in the cluster, scaled to zero when idle; see ``knative``).
    provisioner: Literal["local", "knative"] = "local"

    @model_validator(mode="after")
    def _every_model_priced(self) -> GatewayConfig:
        picked = {m for table in self.models.values() for m in table.values()}
        picked |= {m for models in self.fallback_models.values() for m in models}
        unpriced = sorted(picked - set(self.model_prices))
        if unpriced:
            raise ValueError(f"gateway.model_prices lacks {', '.join(unpriced)}")
        return self

    @model_validator(mode="after")
    def _tokens_within_the_maximum(self) -> GatewayConfig:
        if self.refresh_ttl_days > self.max_token_ttl_days:
            raise ValueError(
                f"refresh_ttl_days ({self.refresh_ttl_days}) exceeds max_token_ttl_days "
                f"({self.max_token_ttl_days})"
            )
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def public_base(self) -> str:
        """Where the outside reaches the gateway (no trailing slash)."""
        return (self.public_url or self.url).rstrip("/")

    @property
    def events_address(self) -> str:
        """The ROUTER agents send their critical events to."""
        return tcp_address(self.host, self.events_port)


class EmbedderConfig(_Section):
    """The shared embedding service (all-MiniLM-L6-v2)."""

    #: false: ``dexorder up`` does not start it (saves ~0.7 GB; conversation search is off)
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5570, ge=1, le=65535)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class AgentConfig(_Section):
    """The person's agent (one process per person)."""

    host: str = "127.0.0.1"
    #: Port of ``dexorder agent``; the provisioner gives each agent its own.
    port: int = Field(8800, ge=0, le=65535)
    #: Ed25519 private key (PEM) that makes agent tokens: the gateway's, in secrets.yaml.
    #: Unset (one machine): ``state/agent_token_ed25519.pem``, made on first use.
    token_private_key: str | None = None
    #: The matching public key: all an agent in the cluster needs to check tokens.
    token_public_key: str | None = None
    #: A service token for the agent's own calls (critical events to the gateway), given
    #: by the provisioner where the agent holds only the public key.
    service_token: str | None = None
    #: The agent's token for the embedding service (audience ``dexorder-embedder``: the
    #: embedder takes no other), given by the provisioner where the agent cannot make one.
    embedder_token: str | None = None
    tier: Literal["free", "pro", "enterprise"] = "free"
    #: Idle time (s) after which the agent exits with code 42, per tier; null: never.
    idle_timeout_s: dict[str, int | None] = {"free": 900, "pro": 3600, "enterprise": None}
    #: The gateway's ROUTER for critical events (fills, alerts); unset: kept on disk.
    gateway_events: str | None = None
    #: The gateway's HTTP address, where the agent registers its person's market rules
    #: (alerts, resting paper orders) for the stream engine to watch; unset (an agent on
    #: its own, or a gateway without Kafka): the agent watches them itself, awake.
    gateway_url: str | None = None
    sandbox: SandboxConfig = SandboxConfig()
    #: One machine: "namespace" runs each person's agent in its own mount, PID and IPC
    #: namespaces (bubblewrap) seeing only its person's folder, the lake (read-only) and
    #: the code; where that cannot be set up, agents are refused. "none" runs agents as
    #: plain processes that can read every file the gateway can (a single-user machine
    #: only; warned at every start).
    process_isolation: Literal["namespace", "none"] = "namespace"
    #: A JSON file the provisioner keeps the agent's tokens in (``service``, ``embedder``),
    #: renewed while the agent runs; read on every use.
    tokens_file: str | None = None


class KnativeTierConfig(_Section):
    """A tier's agent pod: memory and CPU limits, CPU request, workspace size (Kubernetes
    quantities). Its idle time is ``agent.idle_timeout_s``."""

    memory: str
    cpu: str
    cpu_request: str
    storage: str


class KnativeConfig(_Section):
    """People's agents as Knative Services (``gateway.provisioner: knative``), and the
    lifecycle sweeper that removes those of deleted accounts."""

    #: The API server's URL; unset: in the cluster (``KUBERNETES_SERVICE_HOST``/``_PORT``).
    api_server: str | None = None
    #: The ServiceAccount token (re-read as it rotates) and the API server's CA.
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    #: Where agents live, and what their pods run and read.
    namespace: str = "dexorder-agents"
    agent_image: str = "ghcr.io/dexorder/agent:0.1.0"
    agent_config_map: str = "dexorder-agent-config"
    agent_service_account: str = "dexorder-agent"
    #: A RuntimeClass for agent pods (e.g. gVisor's ``gvisor``: knative/README.md, "The
    #: person's code sandbox in an agent pod"); unset: the node's default runtime. Needs
    #: Knative's ``kubernetes.podspec-runtimeclassname``.
    agent_runtime_class: str | None = None
    #: The workspaces' StorageClass; unset: the cluster's default.
    storage_class: str | None = None
    #: How long a person's first message waits for their agent's Service to be Ready.
    ready_timeout_s: float = Field(120.0, gt=0, le=600)
    #: A person's MCP session with their agent is closed this long after their last turn:
    #: an open stream is an open request, and an open request keeps a pod from scaling
    #: to zero.
    session_linger_s: float = Field(30.0, ge=0, le=300)
    tiers: dict[str, KnativeTierConfig] = {
        "free": KnativeTierConfig(memory="512Mi", cpu="500m", cpu_request="100m", storage="1Gi"),
        "pro": KnativeTierConfig(memory="2Gi", cpu="2000m", cpu_request="250m", storage="10Gi"),
        "enterprise": KnativeTierConfig(
            memory="4Gi", cpu="4000m", cpu_request="500m", storage="50Gi"
        ),
    }
    #: How often the lifecycle sweeper looks for agents to remove.
    sweep_interval_s: float = Field(300.0, ge=1)
    #: Anonymous people's agents are removed after this long without a message.
    anonymous_retention_days: float = Field(7.0, gt=0)


class TelemetryConfig(_Section):
    """Traces of chat turns (dexorder/telemetry.py): off unless an OTLP endpoint is set."""

    #: The OTLP/HTTP collector's base URL (``http://collector:4318``; spans go to its
    #: ``/v1/traces``); unset: the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` if set, else
    #: no traces at all (no exporter, no recording spans).
    otlp_endpoint: str | None = None

    def endpoint(self) -> str | None:
        """Where spans go: this setting, else the standard variable, else nowhere."""
        return self.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def default_home() -> Path:
    return Path(os.environ.get("DEXORDER_HOME") or Path.home() / ".dexorder")


class Settings(BaseSettings):
    """All of the platform's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="DEXORDER_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(default_factory=default_home)
    log_level: str = "info"
    #: Where every part's ``/healthz`` and ``/metrics`` listen: loopback on one machine;
    #: ``0.0.0.0`` in a pod, so the kubelet's probes and Prometheus reach them.
    health_host: str = "127.0.0.1"
    kafka: KafkaConfig = KafkaConfig()
    relay: RelayConfig = RelayConfig()
    emulator: EmulatorConfig = EmulatorConfig()
    #: One entry per exchange; ``dexorder up`` runs one ingestor for each.
    exchanges: list[ExchangeConfig] = [ExchangeConfig()]
    stream: StreamConfig = StreamConfig()
    market_data: MarketDataConfig = MarketDataConfig()
    lake: LakeConfig = LakeConfig()
    writer: WriterConfig = WriterConfig()
    agent: AgentConfig = AgentConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    gateway: GatewayConfig = GatewayConfig()
    knative: KnativeConfig = KnativeConfig()
    telemetry: TelemetryConfig = TelemetryConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    def exchange_config(self, name: str) -> ExchangeConfig:
        """The configuration of exchange ``name`` (e.g. ``BINANCE``)."""
        for ex in self.exchanges:
            if ex.name.upper() == name.upper():
                return ex
        known = ", ".join(e.name for e in self.exchanges)
        raise ConfigError(f"exchanges: no exchange named {name!r} (configured: {known})")

    @property
    def emulator_url(self) -> str:
        return f"http://{self.emulator.host}:{self.emulator.port}"

    def agent_dir(self, user: str) -> Path:
        """Everything of one person's agent: workspace, state, scratch, backtests."""
        return self.home / "agents" / user

    def state_dir(self, part: str) -> Path:
        """A part's own folder under the home folder, created on demand."""
        path = self.home / "state" / part
        path.mkdir(parents=True, exist_ok=True)
        return path


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_keys() -> set[tuple[str, ...]]:
    prefix = "DEXORDER_"
    return {
        tuple(name[len(prefix) :].lower().split("__"))
        for name in os.environ
        if name.startswith(prefix)
    }


def _drop_env_overridden(data: dict[str, Any], env: set[tuple[str, ...]]) -> dict[str, Any]:
    """Remove file values the environment sets, so the environment wins."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if (key,) in env:
            continue
        if isinstance(value, dict):
            sub = {k[1:] for k in env if len(k) > 1 and k[0] == key}
            out[key] = _drop_env_overridden(value, sub)
        else:
            out[key] = value
    return out


def load_config(home: Path | None = None) -> Settings:
    """Load and validate the configuration; raise :class:`ConfigError` on any bad key."""
    home = home or default_home()
    config_path = Path(os.environ.get("DEXORDER_CONFIG") or home / "config.yaml")
    secrets_path = Path(os.environ.get("DEXORDER_SECRETS") or home / "secrets.yaml")
    config_file = _read_yaml(config_path)
    if isinstance(config_file.get("kafka"), dict) and config_file["kafka"].get("sasl_password"):
        # config.yaml is a ConfigMap in the cluster, readable by more than this part
        raise ConfigError(
            f"{config_path}: kafka.sasl_password belongs in secrets.yaml (or in a file named"
            " by kafka.sasl_password_file), never in config.yaml"
        )
    files = _deep_merge(config_file, _read_yaml(secrets_path))
    files = _drop_env_overridden(files, _env_keys())
    files.setdefault("home", home)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap and "DEXORDER_KAFKA__BOOTSTRAP_SERVERS" not in os.environ:
        files = _deep_merge(files, {"kafka": {"bootstrap_servers": bootstrap}})
    try:
        return Settings(**files)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else "")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
