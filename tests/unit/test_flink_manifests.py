"""The Flink job's deployment pieces (knative/flink/) hold together, offline.

The FlinkDeployment is checked against the operator's CRD schema (strict: an unknown field
fails, as tests/knative do for every manifest); the Dockerfile, the manifest and the job's
configuration are checked against each other and against the repository: what the image
copies exists, the jar and the script the manifest names are where the image puts them,
the job's arguments are flags its argparse defines, and the job configuration is one the
job accepts. Nothing here builds the image or talks to a cluster.
"""

from __future__ import annotations

import ast
import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
import zmq

from dexorder.tokens import new_private_pem
from streaming.flink import config as job_config
from streaming.flink.records import job_record_keys
from tests.knative.manifests import crd_schemas, validate

ROOT = Path(__file__).resolve().parents[2]
FLINK = ROOT / "knative" / "flink"
#: where the Dockerfile puts the repository's files in the image
APP = "/opt/dexorder"


@functools.cache
def _crd_validator() -> Any:
    """The FlinkDeployment CRD's strict schema (tests/knative's), checked once: checking
    that large schema on every validation took seconds each."""
    schema = crd_schemas()[("flink.apache.org/v1beta1", "FlinkDeployment")]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validate_deployment(doc: dict[str, Any]) -> None:
    _crd_validator().validate(doc)


def _deployment() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FLINK / "flink-deployment.yaml").read_text())
    return doc


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments gone."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (FLINK / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    """The Dockerfile's ARG defaults."""
    out = {}
    for word, rest in _instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out[name] = value
    return out


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    out = []
    for word, rest in _instructions():
        if word != "COPY":
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def test_the_flink_deployment_is_valid_against_the_operators_crd() -> None:
    _validate_deployment(_deployment())


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["spec"]["job"].update(upgradeMode="whenever"),
        lambda d: d["spec"].update(flinkVersion="v3_0"),
        lambda d: d["spec"]["job"].update(entrypoint="main"),  # a field the CRD does not have
    ],
)
def test_a_wrong_flink_deployment_fails_validation(change: Any) -> None:
    broken = copy.deepcopy(_deployment())
    change(broken)
    with pytest.raises(jsonschema.ValidationError):
        _validate_deployment(broken)


def test_checkpoints_savepoints_and_restarts_use_flink_2_keys() -> None:
    spec = _deployment()["spec"]
    conf = spec["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"].startswith("s3://")
    assert conf["execution.checkpointing.savepoint-dir"].startswith("s3://")
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["execution.checkpointing.interval"]
    assert conf["restart-strategy.type"] == "exponential-delay"
    # keys Flink 2 removed or renamed (state.savepoints.dir stays for older operators)
    for old in ("state.checkpoints.dir", "state.backend", "restart-strategy"):
        assert old not in conf, old
    assert spec["job"]["upgradeMode"] == "savepoint"
    # every value a string: the operator's flinkConfiguration is a map of strings
    assert all(isinstance(v, str) for v in conf.values())


def _init_container() -> dict[str, Any]:
    (init,) = _deployment()["spec"]["podTemplate"]["spec"]["initContainers"]
    found: dict[str, Any] = init
    return found


def _run_init(
    tmp_path: Path,
    server_public: str,
    publisher_secret: str,
    record_key: str | None = None,
    seal_key: str | None = None,
) -> Path:
    """Run the init container's script as the pod would, on files made here; return the
    folder it wrote (the job's configuration and the key file)."""
    init = _init_container()
    names = {e["name"] for e in init["env"]}
    assert names == {"JOB_TEMPLATE", "PLATFORM_CONFIG", "PLATFORM_SECRETS", "OUT"}
    out = tmp_path / "job"
    out.mkdir()
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"relay": {"server_public_key": server_public}})
    )
    secrets: dict[str, Any] = {"relay": {"publisher_secret_key": publisher_secret}}
    if seal_key is not None:
        secrets["relay"]["rule_seal_key"] = seal_key
    if record_key is not None:
        secrets["kafka"] = {"record_signing_key": record_key}
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secrets))
    command = init["command"]
    assert command[:2] == ["python", "-c"]
    subprocess.run(
        [sys.executable, "-c", command[2]],
        check=True,
        env={
            **os.environ,
            "JOB_TEMPLATE": str(FLINK / "job.yaml"),
            "PLATFORM_CONFIG": str(tmp_path / "config.yaml"),
            "PLATFORM_SECRETS": str(tmp_path / "secrets.yaml"),
            "OUT": str(out),
        },
    )
    return out


def test_the_job_runs_with_its_configuration_and_the_relays_keys(tmp_path: Path) -> None:
    spec = _deployment()["spec"]
    template = job_config.load(FLINK / "job.yaml")  # the ConfigMap alone is a valid one
    assert template.relay is not None and template.relay.server_key is None
    public, secret = (k.decode() for k in zmq.curve_keypair())
    out = _run_init(tmp_path, public, secret)
    cfg = job_config.load(out / "job.yaml")
    assert cfg.kafka is not None and cfg.files is None
    assert cfg.relay is not None and cfg.relay.server_key == public
    assert cfg.relay.secret_key_file is not None
    assert Path(cfg.relay.secret_key_file).read_text() == secret
    assert cfg.checkpoints.mode == "exactly-once"
    # the job sets its checkpoint directory itself: the same as the cluster's
    assert cfg.checkpoints.dir == spec["flinkConfiguration"]["execution.checkpointing.dir"]
    assert cfg.parallelism == spec["job"]["parallelism"]
    assert cfg.kafka.connector_jar == "/opt/flink/lib/flink-sql-connector-kafka.jar"


def test_the_job_gets_the_stream_parts_record_signing_key(tmp_path: Path) -> None:
    """The job signs what it produces (and checks market.rules) with the Secret's
    kafka.record_signing_key, which it wants in a file of its own."""
    pem = new_private_pem()
    public, secret = (k.decode() for k in zmq.curve_keypair())
    cfg = job_config.load(_run_init(tmp_path, public, secret, record_key=pem) / "job.yaml")
    assert cfg.kafka is not None and cfg.kafka.record_key_file is not None
    keys = job_record_keys(cfg.kafka.record_key_file)
    assert keys.private is not None


def test_the_job_gets_the_rule_seal_key_in_a_file_it_mounts(tmp_path: Path) -> None:
    """Fired rules go to the relay sealed with relay.rule_seal_key: the init container
    writes the Secret's key where the job reads it (under the job's own mount)."""
    public, secret = (k.decode() for k in zmq.curve_keypair())
    seal = "s" * 43
    out = _run_init(tmp_path, public, secret, seal_key=seal)
    cfg = job_config.load(out / "job.yaml")
    assert cfg.relay is not None and cfg.relay.rule_seal_key_file is not None
    seal_file = Path(cfg.relay.rule_seal_key_file)
    assert seal_file.parent == out and seal_file.read_text() == seal


def test_the_init_container_reads_what_the_pod_mounts_and_writes_what_the_job_reads() -> None:
    pod = _deployment()["spec"]["podTemplate"]["spec"]
    init = _init_container()
    env = {e["name"]: e["value"] for e in init["env"]}
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_of(path: str) -> dict[str, Any]:
        found: dict[str, Any] = volumes[mounts[str(Path(path).parent)]]
        return found

    assert volume_of(env["JOB_TEMPLATE"])["configMap"]["name"] == "dexorder-flink-job"
    assert volume_of(env["PLATFORM_CONFIG"])["configMap"]["name"] == "dexorder-config"
    assert volume_of(env["PLATFORM_SECRETS"])["secret"]["secretName"] == "dexorder-stream"
    written = volumes[mounts[env["OUT"]]]
    assert written["emptyDir"]["medium"] == "Memory"  # the secret key never touches a disk
    (main,) = pod["containers"]
    assert {m["name"]: m["mountPath"] for m in main["volumeMounts"]}[written["name"]] == env["OUT"]
    args = _deployment()["spec"]["job"]["args"]
    assert args[args.index("--config") + 1] == f"{env['OUT']}/job.yaml"


def _job_flags() -> set[str]:
    """The ``--flags`` streaming/flink/job.py's argparse defines (read, not run: PyFlink
    lives in its own virtualenv)."""
    tree = ast.parse((ROOT / "streaming" / "flink" / "job.py").read_text())
    flags = {"-h", "--help"}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("-"):
                    flags.add(str(arg.value))
    return flags


def test_the_python_driver_runs_the_real_job_with_its_real_flags() -> None:
    spec = _deployment()["spec"]
    job = spec["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    args = job["args"]
    assert args[0] == "-py"
    script = args[1]
    assert script.startswith(APP + "/")
    assert (ROOT / script.removeprefix(APP + "/")).is_file(), script
    flags = _job_flags()
    assert "--config" in flags
    job_args = args[2:]
    for word in job_args:
        if word.startswith("-"):
            assert word in flags, f"{word}: not a flag of streaming/flink/job.py"


def test_the_dockerfile_builds_from_files_that_exist() -> None:
    copies = _copies()
    assert copies
    ignore = (FLINK / "Dockerfile.dockerignore").read_text().splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for sources, dest in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] in admitted, f"{source}: left out of the context"
            assert dest.startswith(APP + "/"), dest
    # the job's own requirements, and the packages it imports
    copied = {s for sources, _ in copies for s in sources}
    assert {"streaming/flink/requirements.txt", "dexorder", "streaming"} <= copied
    text = (FLINK / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r /opt/dexorder/streaming/flink/requirements.txt" in text


def test_the_image_matches_the_jobs_pyflink_and_holds_what_the_manifest_names() -> None:
    args = _args()
    (pin,) = [
        line.split("==")[1].strip()
        for line in (ROOT / "streaming/flink/requirements.txt").read_text().splitlines()
        if line.startswith("apache-flink==")
    ]
    assert args["FLINK_VERSION"] == pin, "PyFlink and the Flink cluster must be one version"
    assert any(w == "FROM" and r == "flink:${FLINK_VERSION}" for w, r in _instructions())
    major, minor = pin.split(".")[:2]
    spec = _deployment()["spec"]
    assert spec["flinkVersion"] == f"v{major}_{minor}"
    # Kafka connector of the Flink 2 line, downloaded at build time into lib/
    assert re.fullmatch(r"\d+\.\d+\.\d+-2\.\d+", args["KAFKA_CONNECTOR_VERSION"])
    (add,) = [r for w, r in _instructions() if w == "ADD"]
    assert "flink-sql-connector-kafka-${KAFKA_CONNECTOR_VERSION}.jar" in add
    assert add.split()[-1] == "/opt/flink/lib/flink-sql-connector-kafka.jar"
    # the PythonDriver's jar under the name jarURI uses
    jar = spec["job"]["jarURI"].removeprefix("local://")
    assert (
        f'ln -s "$(ls /opt/flink/opt/flink-python-*.jar)" {jar}'
        in (FLINK / "Dockerfile").read_text()
    )
    # the same image runs the job and the init container
    init = spec["podTemplate"]["spec"]["initContainers"]
    assert {c["image"] for c in init} == {spec["image"]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_flink_folder() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(FLINK)], check=True, capture_output=True, text=True
    ).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == [
        "ConfigMap",
        "FlinkDeployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in objs:
        if obj["kind"] == "FlinkDeployment":
            _validate_deployment(obj)
        else:
            validate(obj)
