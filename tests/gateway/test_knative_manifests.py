"""The per-person agent's objects: valid against Knative's CRD schema and Kubernetes' own
(unknown fields fail), and saying what the tiers of DESIGN say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dexorder.tokens import AgentTokens
from gateway.knative import manifests as m
from tests.gateway.loopback_kubernetes import service_validator

IMAGE = "registry.example/dexorder/agent:1.0"


def check_service(manifest: dict[str, Any]) -> None:
    """Valid against Knative's Service CRD schema, unknown fields refused."""
    service_validator().validate(manifest)


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise"])
def test_the_agent_service_is_valid_against_knatives_crd(tier: str) -> None:
    check_service(m.agent_service("u0123456789abcdef", m.DEFAULT_TIERS[tier], IMAGE))


def test_the_strict_schema_refuses_an_unknown_field() -> None:
    """The check above could fail: a misspelt field is caught."""
    manifest = m.agent_service("alice", m.DEFAULT_TIERS["free"], IMAGE)
    manifest["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        check_service(manifest)
    manifest = m.agent_service("alice", m.DEFAULT_TIERS["free"], IMAGE)
    manifest["spec"]["template"]["metadata"]["annotations"][m.MIN_SCALE] = 0
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        check_service(manifest)


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise"])
def test_the_pvc_and_secret_are_valid_kubernetes_objects(tier: str) -> None:
    version = kubernetes_validate.latest_version()
    pvc = m.agent_pvc("alice", m.DEFAULT_TIERS[tier], storage_class="standard")
    kubernetes_validate.validate(pvc, version, strict=True)
    tokens = AgentTokens(service="s.t.x", embedder="e.t.x").model_dump_json()
    kubernetes_validate.validate(m.agent_tokens_secret("alice", tokens), version, strict=True)
    bad = {**pvc, "spec": {**pvc["spec"], "accessMode": ["ReadWriteOnce"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


@pytest.mark.parametrize(
    ("tier", "memory", "cpu", "storage", "annotations"),
    [
        ("free", "512Mi", "500m", "1Gi", {m.MIN_SCALE: "0", m.MAX_SCALE: "1", m.RETENTION: "15m"}),
        ("pro", "2Gi", "2000m", "10Gi", {m.MIN_SCALE: "0", m.MAX_SCALE: "1", m.RETENTION: "60m"}),
        ("enterprise", "4Gi", "4000m", "50Gi", {m.MIN_SCALE: "1", m.MAX_SCALE: "1"}),
    ],
)
def test_tiers_are_designs(
    tier: str, memory: str, cpu: str, storage: str, annotations: dict[str, str]
) -> None:
    svc = m.agent_service("alice", m.DEFAULT_TIERS[tier], IMAGE)
    template = svc["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": cpu, "memory": memory}
    assert container["resources"]["requests"]["memory"] == memory
    assert template["metadata"]["annotations"] == annotations
    pvc = m.agent_pvc("alice", m.DEFAULT_TIERS[tier])
    assert pvc["spec"]["resources"]["requests"] == {"storage": storage}
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_agent_runs_locked_down_and_sees_only_its_own_things() -> None:
    svc = m.agent_service("alice", m.DEFAULT_TIERS["free"], IMAGE)
    spec = svc["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": m.AGENT_UID,
        "runAsGroup": m.AGENT_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        # the runtime's default plus what bubblewrap needs (knative/seccomp/render.py)
        "seccompProfile": {"type": "Localhost", "localhostProfile": "dexorder/agent.json"},
    }
    assert (
        spec["securityContext"]["seccompProfile"] == container["securityContext"]["seccompProfile"]
    )
    assert "runtimeClassName" not in spec  # the node's default runtime unless configured
    assert spec["automountServiceAccountToken"] is False
    assert svc["metadata"]["labels"][m.VISIBILITY] == "cluster-local"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    secrets = [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
    assert claims == [m.pvc_name("alice")]
    assert container["args"] == ["--user", "alice", "--port", str(m.AGENT_PORT)]
    # its own tokens, and the lake's read-only credentials every agent shares
    assert secrets == [m.tokens_secret_name("alice"), m.LAKE_SECRET]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
    assert env["DEXORDER_SECRETS"] == f"{m.LAKE_MOUNT}/secrets.yaml"
    assert mounts[m.LAKE_MOUNT] == "lake"
    assert "PRIVATE" not in json.dumps(svc).upper()
    assert json.loads(env["DEXORDER_AGENT__IDLE_TIMEOUT_S"]) == {
        "free": None,
        "pro": None,
        "enterprise": None,
    }


def test_a_configured_runtime_class_reaches_the_pod() -> None:
    svc = m.agent_service("alice", m.DEFAULT_TIERS["free"], IMAGE, runtime_class="gvisor")
    assert svc["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"


def test_the_pod_environment_loads_as_the_agents_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pod's environment says is what the agent's configuration reads."""
    from dexorder.config import load_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"agent": {"tier": "free"}}))
    svc = m.agent_service("alice", m.DEFAULT_TIERS["pro"], IMAGE)
    for e in svc["spec"]["template"]["spec"]["containers"][0]["env"]:
        monkeypatch.setenv(e["name"], e["value"])
    monkeypatch.setenv("DEXORDER_CONFIG", str(tmp_path / "config.yaml"))
    cfg = load_config(Path(m.DATA_MOUNT))
    assert cfg.agent.tier == "pro"
    assert cfg.agent.idle_timeout_s == {"free": None, "pro": None, "enterprise": None}
    assert cfg.agent.tokens_file == f"{m.TOKENS_MOUNT}/{m.TOKENS_KEY}"


def test_names_are_dns_labels_and_one_per_person() -> None:
    seen = set()
    for user in ["a_b", "a-b", "a", "u" + "x" * 62, "0_", "local"]:
        name = m.service_name(user)
        assert len(m.pvc_name(user)) <= 63 and len(name) <= 50
        assert name.startswith("agent-") and not name.endswith("-")
        assert all((c.isalnum() and c.islower()) or c.isdigit() or c == "-" for c in name)
        seen.add(name)
    assert len(seen) == 6
    with pytest.raises(ValueError, match="invalid user id"):
        m.service_name("../etc")


def test_a_tier_cannot_idle_longer_than_knative_allows() -> None:
    with pytest.raises(ValueError, match="less than or equal to 3600"):
        m.Tier(name="pro", memory="2Gi", cpu="2", cpu_request="1", storage="1Gi", idle_s=7200)
    with pytest.raises(ValueError, match="quantity"):
        m.Tier(name="pro", memory="2 GB", cpu="2", cpu_request="1", storage="1Gi", idle_s=60)
