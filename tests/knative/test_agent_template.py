"""The agent template (knative/base/agent/template.yaml) filled per person and tier."""

from __future__ import annotations

import re

import pytest

from dexorder.config import ConfigError
from dexorder.tokens import InvalidUserId
from gateway.agent_manifests import AGENT_NAMESPACE, agent_name, load_template

TIERS = {
    "free": ("512Mi", "500m", "1Gi", "15m", "0"),
    "pro": ("2Gi", "2000m", "10Gi", "60m", "0"),
    "enterprise": ("4Gi", "4000m", "50Gi", "0s", "1"),
}


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_each_tier_gets_its_resources_retention_and_volume(tier: str) -> None:
    memory, cpu, storage, retention, min_scale = TIERS[tier]
    t = load_template()
    svc, pvc = t.service("alice_01", tier), t.pvc("alice_01", tier)
    name = agent_name("alice_01")
    assert svc["metadata"]["name"] == pvc["metadata"]["name"] == name
    assert svc["metadata"]["namespace"] == pvc["metadata"]["namespace"] == AGENT_NAMESPACE
    template = svc["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/min-scale"] == min_scale
    assert notes["autoscaling.knative.dev/max-scale"] == "1"
    assert notes["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == retention
    assert all(isinstance(v, str) for v in notes.values())
    (container,) = template["spec"]["containers"]
    assert container["resources"]["limits"] == {"memory": memory, "cpu": cpu}
    assert container["args"] == ["--user", "alice_01", "--port", "8080"]
    assert {"name": "DEXORDER_AGENT__TIER", "value": tier} in container["env"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in template["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [name]
    assert pvc["spec"]["resources"]["requests"]["storage"] == storage
    assert template["metadata"]["labels"]["dexorder.io/user"] == "alice_01"


def test_names_are_dns_labels_distinct_and_short_enough_for_revisions() -> None:
    users = ["a", "a_b", "a-b", "x" * 63, "x" * 62 + "y", "0abc", "bob__"]
    names = {agent_name(u) for u in users}
    assert len(names) == len(users)
    for name in names:
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
        assert len(f"{name}-tokens") <= 63 and len(f"{name}-00001") <= 63


def test_a_bad_person_id_or_tier_is_refused() -> None:
    t = load_template()
    with pytest.raises(InvalidUserId):
        t.service("../etc", "free")
    with pytest.raises(ConfigError, match="no agent tier"):
        t.service("alice", "platinum")


def test_the_tokens_secret_is_the_one_the_service_mounts() -> None:
    t = load_template()
    secret = t.tokens_secret("alice", '{"service": "s", "embedder": "e"}')
    volumes = t.service("alice", "free")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tokens", "secret": {"secretName": secret["metadata"]["name"]}} in volumes
    assert secret["stringData"]["tokens.json"].startswith("{")
