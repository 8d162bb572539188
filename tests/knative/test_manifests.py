"""The rendered overlays (kubectl kustomize): valid objects, Knative settings as the issue
asks, eventing generated from triggers.yaml, the admission policy evaluated, who reaches
whom under the NetworkPolicies, Secrets by need, every func.yaml valid."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dexorder.config import SandboxConfig, Settings
from gateway.knative import manifests as m
from tests.knative.manifests import (
    KNATIVE,
    ROOT,
    SCHEMAS,
    AdmissionPolicy,
    agent_pod,
    named,
    of_kind,
    pod_of,
    rendered,
    validate,
)
from tests.knative.netpol import Endpoint, Policies
from triggers.knative import render, sink_name
from triggers.spec import load_triggers

OVERLAYS = ["overlays/dev", "overlays/prod"]
FUNCTIONS = ["notification-fanout", "backfill-dispatch", "tool-proxy", "rule-delivery"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid(overlay: str) -> None:
    for obj in rendered(overlay):
        try:
            validate(obj)
        except Exception as exc:  # name the object
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {exc}") from exc


def test_unknown_fields_fail_validation() -> None:
    objs = rendered("overlays/prod")
    deployment = copy.deepcopy(named(objs, "Deployment", "relay"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(Exception, match="resource"):
        validate(deployment)
    svc = copy.deepcopy(named(objs, "Service", "gateway"))
    svc["spec"]["template"]["spec"]["timeout"] = 10
    with pytest.raises(jsonschema.ValidationError, match="timeout"):
        validate(svc)
    source = copy.deepcopy(of_kind(objs, "KafkaSource")[0])
    source["spec"]["offset"] = "earliest"
    with pytest.raises(jsonschema.ValidationError, match="offset"):
        validate(source)


def _ksvcs(overlay: str) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for o in rendered(overlay)
        if o["apiVersion"] == "serving.knative.dev/v1" and o["kind"] == "Service"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_knative_services_scale_and_time_out_as_chosen(overlay: str) -> None:
    services = _ksvcs(overlay)
    assert set(services) == {"gateway", "telegram-webhook", *FUNCTIONS}
    for name, svc in services.items():
        template = svc["spec"]["template"]
        notes = template["metadata"]["annotations"]
        for key, value in notes.items():
            assert isinstance(value, str), (name, key)
            if key.startswith("autoscaling.knative.dev/"):
                assert re.fullmatch(r"autoscaling\.knative\.dev/[a-z-]+", key), (name, key)
        spec = template["spec"]
        assert 0 < spec["timeoutSeconds"] <= 600 and 0 < spec["responseStartTimeoutSeconds"] <= 600
        # none of them streams a plain HTTP answer: its first byte may come as late as its last
        assert spec["responseStartTimeoutSeconds"] == spec["timeoutSeconds"], name
        assert spec["containerConcurrency"] > 0
        for c in spec["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
    gateway = services["gateway"]["spec"]["template"]
    assert int(gateway["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]) >= 1
    assert gateway["spec"]["timeoutSeconds"] + gateway["spec"]["responseStartTimeoutSeconds"] <= 600
    for name in [*FUNCTIONS, "telegram-webhook"]:
        notes = services[name]["spec"]["template"]["metadata"]["annotations"]
        assert notes["autoscaling.knative.dev/min-scale"] == "0", name
    for name in FUNCTIONS:
        assert services[name]["metadata"]["labels"]["networking.knative.dev/visibility"] == (
            "cluster-local"
        )


def test_eventing_yaml_is_generated_from_triggers_yaml() -> None:
    assert (KNATIVE / "base/eventing.yaml").read_text() == render(load_triggers()), (
        "run: python -m triggers.knative > knative/base/eventing.yaml"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_sources_match_triggers_yaml(overlay: str) -> None:
    objs = rendered(overlay)
    sources = {o["metadata"]["name"]: o for o in of_kind(objs, "KafkaSource")}
    triggers = load_triggers()
    assert set(sources) == {t.name for t in triggers}
    sinks = {o["metadata"]["name"]: o for o in of_kind(objs, "KafkaSink")}
    services = _ksvcs(overlay)
    for t in triggers:
        spec = sources[t.name]["spec"]
        assert spec["topics"] == [t.topic]
        assert spec["consumerGroup"] == f"dexorder-trigger-{t.name}"
        assert spec["initialOffset"] == "earliest" and spec["ordering"] == "ordered"
        target = spec["sink"]["ref"]
        if t.reply_topic:  # through the Broker: the function's Trigger has the delivery
            assert target["kind"] == "Broker"
            (call,) = [
                o
                for o in of_kind(objs, "Trigger")
                if o["spec"]["filter"]["attributes"]["type"] == t.event_type
            ]
            assert call["spec"]["subscriber"]["ref"]["name"] == t.function
            delivery = call["spec"]["delivery"]
            (reply,) = [
                o
                for o in of_kind(objs, "Trigger")
                if o["spec"]["filter"]["attributes"]["type"] == t.reply_type
            ]
            reply_sink = sinks[reply["spec"]["subscriber"]["ref"]["name"]]
            assert reply_sink["spec"]["topic"] == t.reply_topic
        else:
            assert target == {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": t.function,
            }
            delivery = spec["delivery"]
        assert t.function in services
        assert delivery["retry"] == t.retries and delivery["backoffPolicy"] == t.backoff
        dead = sinks[delivery["deadLetterSink"]["ref"]["name"]]
        assert dead["spec"]["topic"] == f"{t.topic}.dlq" == t.dead_letter_topic
        assert sink_name(t.topic + ".dlq") == dead["metadata"]["name"]


# --- the admission policy ---------------------------------------------------------------


def _policy() -> AdmissionPolicy:
    return AdmissionPolicy(
        named(rendered("overlays/prod"), "ValidatingAdmissionPolicy", "dexorder-agents")
    )


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise"])
def test_a_compliant_agent_pod_is_admitted(tier: str) -> None:
    pod = agent_pod(tier)
    validate(pod)
    assert _policy().refusals(pod) == []


def _broken(change: str) -> dict[str, Any]:
    pod = agent_pod()
    agent = pod["spec"]["containers"][0]
    if change == "root":
        pod["spec"]["securityContext"]["runAsNonRoot"] = False
        pod["spec"]["securityContext"]["runAsUser"] = 0
        agent["securityContext"]["runAsNonRoot"] = False
        agent["securityContext"]["runAsUser"] = 0
    elif change == "no limits":
        del agent["resources"]["limits"]
    elif change == "unapproved image":
        agent["image"] = "ghcr.io/dexorder/agent-evil:1"
    elif change == "writable root":
        agent["securityContext"]["readOnlyRootFilesystem"] = False
    elif change == "capabilities":
        agent["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_RAW"]}
    elif change == "sidecar":
        pod["spec"]["containers"].append({"name": "x", "image": "busybox:latest"})
    elif change == "seccomp runtime default":
        for sc in (pod["spec"]["securityContext"], agent["securityContext"]):
            sc["seccompProfile"] = {"type": "RuntimeDefault"}
    elif change == "seccomp unconfined":
        for sc in (pod["spec"]["securityContext"], agent["securityContext"]):
            sc["seccompProfile"] = {"type": "Unconfined"}
    elif change == "seccomp other profile":
        for sc in (pod["spec"]["securityContext"], agent["securityContext"]):
            sc["seccompProfile"] = {"type": "Localhost", "localhostProfile": "dexorder/any.json"}
    elif change == "seccomp container unconfined":
        agent["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    elif change == "seccomp agent as queue-proxy":
        # only Knative's queue-proxy may fall back to the runtime's default
        agent["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    elif change == "seccomp pod unset":
        del pod["spec"]["securityContext"]["seccompProfile"]
    return pod


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("root", "non-root"),
        ("no limits", "limits"),
        ("unapproved image", "approved image"),
        ("writable root", "read-only root"),
        ("capabilities", "capabilities"),
        ("sidecar", "approved image"),
        ("seccomp runtime default", "seccomp profile"),
        ("seccomp unconfined", "seccomp profile"),
        ("seccomp other profile", "seccomp profile"),
        ("seccomp container unconfined", "seccomp profile"),
        ("seccomp agent as queue-proxy", "seccomp profile"),
        ("seccomp pod unset", "seccomp profile"),
    ],
)
def test_the_admission_policy_refuses(change: str, message: str) -> None:
    refusals = _policy().refusals(_broken(change))
    assert any(message in r for r in refusals), refusals


def test_the_policy_is_bound_to_the_agents_namespace_only() -> None:
    binding = named(
        rendered("overlays/prod"), "ValidatingAdmissionPolicyBinding", "dexorder-agents"
    )
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "dexorder-agents"
    }


# --- who reaches whom -------------------------------------------------------------------


def _pod(name: str, namespace: str, labels: dict[str, str]) -> Endpoint:
    return Endpoint(name, namespace, labels)


def _endpoints(overlay: str) -> dict[str, Endpoint]:
    """Every pod of the render (labels as their pods get them), an agent, and what lives
    outside the platform's namespaces."""
    out: dict[str, Endpoint] = {}
    for obj in rendered(overlay):
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
        elif obj["apiVersion"] == "serving.knative.dev/v1" and obj["kind"] == "Service":
            labels = {
                **obj["spec"]["template"]["metadata"]["labels"],
                "serving.knative.dev/service": obj["metadata"]["name"],
            }
        elif obj["kind"] == "FlinkDeployment":
            labels = obj["spec"]["podTemplate"]["metadata"]["labels"]
        else:
            continue
        out[obj["metadata"]["name"]] = _pod(
            obj["metadata"]["name"], obj["metadata"]["namespace"], labels
        )
    pod = agent_pod("free", "alice")
    out["agent"] = _pod("agent", m.NAMESPACE, pod["metadata"]["labels"])
    other = agent_pod("free", "bob")
    out["other-agent"] = _pod("other-agent", m.NAMESPACE, other["metadata"]["labels"])
    out.update(
        {
            "kourier": _pod("kourier", "kourier-system", {"app": "3scale-kourier-gateway"}),
            "activator": _pod("activator", "knative-serving", {"app": "activator"}),
            "kube-dns": _pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}),
            "kafka": _pod("kafka", "kafka", {"strimzi.io/kind": "Kafka"}),
            # the lake's catalog, labelled for agents (knative/base/networkpolicies.yaml)
            "postgres": _pod(
                "postgres", "dexorder-data", {"app": "postgresql", "dexorder.io/lake": "catalog"}
            ),
            # a database server that is not the lake's (e.g. the accounts' own)
            "other-postgres": _pod("other-postgres", "dexorder-data", {"app": "postgresql"}),
            "minio": _pod("minio", "dexorder-data", {"app": "minio", "dexorder.io/lake": "store"}),
            "redis": _pod("redis", "dexorder-data", {"app": "redis"}),
            "qdrant": _pod("qdrant", "dexorder-data", {"app": "qdrant"}),
            "prometheus": _pod(
                "prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}
            ),
            "grafana": _pod("grafana", "monitoring", {"app.kubernetes.io/name": "grafana"}),
            "otel-collector": _pod(
                "otel-collector",
                "monitoring",
                {"app.kubernetes.io/name": "opentelemetry-collector"},
            ),
            "api-server": Endpoint("api-server", ip="10.96.0.1"),
            "internet": Endpoint("internet", ip="203.0.113.10"),
            "metadata": Endpoint("metadata", ip="169.254.169.254"),
        }
    )
    return out


PORTS = {
    "gateway": [8012, 8080, 5580],
    "telegram-webhook": [8012],
    "relay": [5555, 5557, 5558, 5559, 5560],
    "embedder": [5570],
    "agent": [8012, 8080],
    "other-agent": [8012, 8080],
    "kourier": [8080, 8081],
    "activator": [8012],
    "kube-dns": [53],
    "kafka": [9092],
    "postgres": [5432],
    "other-postgres": [5432],
    "minio": [9000, 9001],
    "redis": [6379],
    "qdrant": [6333],
    "api-server": [443, 6443],
    "internet": [80, 443],
    "metadata": [80],
    "ingestor-binance": [5561],
    "lake-writer": [5563],
    "stream-runner": [5562],
    "prometheus": [9090],
    "otel-collector": [4317, 4318],
    "exchange-emulator": [8765],
    **{f: [8012] for f in FUNCTIONS},
}

#: What an agent may open, all of it; anything else (other agents, the API server, Kafka,
#: other databases, the ingress, other platform parts, plain HTTP out) it may not.
AGENT_EGRESS = {
    ("gateway", 8080),
    ("gateway", 5580),
    ("relay", 5558),
    ("relay", 5559),
    ("embedder", 5570),
    ("postgres", 5432),  # the lake's catalog, read-only role (knative/lake/reader-role.sql)
    ("minio", 9000),  # the lake's files, read-only keys
    ("kube-dns", 53),
    ("internet", 443),
    ("otel-collector", 4318),  # its spans (OTLP/HTTP), when traces are on
}
GATEWAY_MUST = {
    ("kourier", 8081),  # agents and functions, through Knative
    ("kafka", 9092),
    ("postgres", 5432),
    ("redis", 6379),
    ("qdrant", 6333),
    ("api-server", 443),
    ("relay", 5559),
    ("embedder", 5570),
    ("internet", 443),
    ("otel-collector", 4318),
}


def _reachable(overlay: str, src: str) -> set[tuple[str, int]]:
    endpoints = _endpoints(overlay)
    policies = Policies(of_kind(rendered(overlay), "NetworkPolicy"))
    out: set[tuple[str, int]] = set()
    if src not in endpoints:  # a part of the other overlay only
        return out
    for dst, ports in PORTS.items():
        if dst == src or dst not in endpoints:
            continue
        for port in ports:
            protocol = "UDP" if port == 53 else "TCP"
            if policies.reaches(endpoints[src], endpoints[dst], port, protocol):
                out.add((dst, port))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_agent_reaches_exactly_what_it_needs(overlay: str) -> None:
    assert _reachable(overlay, "agent") == AGENT_EGRESS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_knative_reaches_an_agent(overlay: str) -> None:
    callers = {src for src in PORTS if ("agent", 8012) in _reachable(overlay, src)}
    assert callers == {"kourier", "activator"}
    # and the gateway reaches Knative's ingress, which agents do not
    assert ("kourier", 8081) in _reachable(overlay, "gateway")
    assert ("kourier", 8081) not in _reachable(overlay, "agent")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_reaches_what_it_serves_from(overlay: str) -> None:
    assert _reachable(overlay, "gateway") >= GATEWAY_MUST


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_platform_parts_stay_in_their_lanes(overlay: str) -> None:
    relay, embedder = _reachable(overlay, "relay"), _reachable(overlay, "embedder")
    assert relay == {("kube-dns", 53)} and embedder == {("kube-dns", 53)}
    for function in FUNCTIONS:
        reached = _reachable(overlay, function)
        assert ("api-server", 443) not in reached and ("kafka", 9092) not in reached
        assert ("postgres", 5432) not in reached
        # only the tool proxy keeps something (its calls' replies, for redeliveries)
        assert (("redis", 6379) in reached) == (function == "tool-proxy"), function
    assert ("relay", 5557) not in _reachable(overlay, "gateway")  # only publishers publish
    # of our parts only the gateway and agents send spans to the collector (outside our
    # namespaces nothing is isolated), and on OTLP/HTTP alone
    endpoints = _endpoints(overlay)
    ours = ("dexorder-system", "dexorder-agents")
    senders = {
        src
        for src in PORTS
        if src in endpoints
        and endpoints[src].namespace in ours
        and ("otel-collector", 4318) in _reachable(overlay, src)
    }
    # (the Telegram webhook is the gateway too: its turns are traced alike)
    assert senders == {"gateway", "telegram-webhook", "agent", "other-agent"}, senders
    assert not any(("otel-collector", 4317) in _reachable(overlay, s) for s in ("gateway", "agent"))
    assert not any(dst == "agent" for dst, _ in _reachable(overlay, "internet"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_each_parts_metrics_port_and_nothing_else(overlay: str) -> None:
    cfg = _config(overlay, "dexorder-config")
    scraped = {"relay", "ingestor-binance", "stream-runner", "lake-writer", "embedder"}
    parts = {name for name in _endpoints(overlay) if name in scraped}  # stream-runner: dev
    metrics = {(name, HEALTH_PORT[name](cfg)) for name in parts}
    assert ("relay", 5560) in metrics and ("lake-writer", 5563) in metrics
    endpoints = _endpoints(overlay)
    ours = ("dexorder-system", "dexorder-agents")  # (outside them nothing is isolated)
    reached = {
        (d, p) for d, p in _reachable(overlay, "prometheus") if endpoints[d].namespace in ours
    }
    assert reached == metrics  # no agent, no function, the gateway not
    # only Prometheus: another pod of its namespace reaches none of it
    assert not _reachable(overlay, "grafana") & metrics
    # and every other way in to those ports stays shut (agents, functions, the gateway)
    for src in PORTS:
        if src != "prometheus":
            assert not (_reachable(overlay, src) & metrics - {("embedder", 5570)}), src


# --- Secrets by need --------------------------------------------------------------------


def _table() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load((KNATIVE / "secrets.yaml").read_text())[
        "secrets"
    ]
    return data


def _secret_refs(node: Any) -> set[str]:
    """Every Secret a manifest fragment names."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "secretName" in node:
            found.add(node["secretName"])
        for key in ("secretKeyRef", "secretRef"):
            if key in node and "name" in node[key]:
                found.add(node[key]["name"])
        if "secret" in node and isinstance(node["secret"], dict):
            ref = node["secret"].get("ref") or node["secret"]
            if "name" in ref:
                found.add(ref["name"])
        for value in node.values():
            found |= _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _secret_refs(value)
    return found


def _allowed(workload: str) -> set[str]:
    return {name for name, row in _table().items() if workload in row["used_by"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_mounts_only_its_own_secrets(overlay: str) -> None:
    for obj in rendered(overlay):
        kind = obj["kind"]
        if kind in ("KafkaSource", "KafkaSink"):
            workload = "eventing"
        elif kind in ("Deployment", "FlinkDeployment") or (
            kind == "Service" and obj["apiVersion"] == "serving.knative.dev/v1"
        ):
            workload = obj["metadata"]["name"]
        else:
            continue
        refs = _secret_refs(obj["spec"])
        assert refs <= _allowed(workload), (workload, refs - _allowed(workload))


def _func_yaml_secrets(data: dict[str, Any]) -> set[str]:
    refs = {v["secret"] for v in data.get("run", {}).get("volumes", []) if "secret" in v}
    for env in data.get("run", {}).get("envs", []):
        refs |= set(re.findall(r"\{\{\s*secret:([^:}\s]+)", env.get("value", "")))
    return refs


def _func_files() -> list[Path]:
    return [ROOT / "func.yaml", *sorted((ROOT / "functions").glob("*/func.yaml"))]


class _NoTimestamps(yaml.SafeLoader):
    """YAML as func reads it: ``created`` stays a string."""


_NoTimestamps.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def test_every_func_yaml_holds_only_its_own_secrets() -> None:
    for path in _func_files():
        data = yaml.load(path.read_text(), Loader=_NoTimestamps)
        refs = _func_yaml_secrets(data)
        assert refs <= _allowed(data["name"]), (path, refs)
        assert (
            "token_private_key" not in path.read_text()
            or data["name"] in _table()["dexorder-gateway"]["used_by"]
        )


def test_only_the_gateway_holds_the_token_private_key() -> None:
    holders = [name for name, row in _table().items() if "agent.token_private_key" in row["keys"]]
    assert holders == ["dexorder-gateway"]
    assert set(_table()["dexorder-gateway"]["used_by"]) <= {
        "gateway",
        "telegram-webhook",
        "auth",
        "chat",
    }


def test_the_table_names_real_configuration_keys() -> None:
    from dexorder.config import Settings

    for name, row in _table().items():
        if not name.startswith("dexorder-") or name == "dexorder-kafka-triggers":
            continue
        for key in row["keys"]:
            section, field = key.split(".")
            model = Settings.model_fields[section].annotation
            assert field in model.model_fields, key  # type: ignore[union-attr]


def test_the_readme_table_is_the_table() -> None:
    text = (KNATIVE / "README.md").read_text()
    for name, row in _table().items():
        line = next((ln for ln in text.splitlines() if ln.startswith(f"| `{name}`")), None)
        assert line is not None, f"knative/README.md lacks the row of {name}"
        for key in row["keys"]:
            assert f"`{key}`" in line, (name, key)
        for workload in row["used_by"]:
            assert workload in line, (name, workload)


# --- func.yaml --------------------------------------------------------------------------


def test_every_func_yaml_is_valid_against_funcs_schema() -> None:
    schema = json.loads((SCHEMAS / "func/func_yaml-schema.json").read_text())
    assert len(_func_files()) == 8
    for path in _func_files():
        data = yaml.load(path.read_text(), Loader=_NoTimestamps)
        jsonschema.validate(data, schema)
        assert data["specVersion"] == "0.36.0"
        options = data["deploy"]["options"]
        assert {"min", "max"} <= set(options["scale"]) and "limits" in options["resources"]
        assert "annotations" not in data["deploy"] or not any(
            k.startswith("autoscaling.knative.dev/") for k in data["deploy"]["annotations"]
        ), "func deploy overwrites hand-set autoscaling annotations: use deploy.options.scale"


def test_func_yaml_scaling_agrees_with_the_manifests() -> None:
    services = _ksvcs("overlays/prod")
    for path in _func_files():
        data = yaml.load(path.read_text(), Loader=_NoTimestamps)
        if data["name"] not in services:
            continue  # auth and chat: served by the gateway Service in the cluster
        notes = services[data["name"]]["spec"]["template"]["metadata"]["annotations"]
        scale = data["deploy"]["options"]["scale"]
        assert str(scale["min"]) == notes["autoscaling.knative.dev/min-scale"], path
        assert str(scale["max"]) == notes["autoscaling.knative.dev/max-scale"], path


def test_the_flink_job_is_in_prod() -> None:
    prod = yaml.safe_load((KNATIVE / "overlays/prod/kustomization.yaml").read_text())
    flink = KNATIVE / "flink" / "kustomization.yaml"
    if flink.is_file():
        assert "../../flink" in prod["resources"], "knative/flink/ landed: use it in prod"
    assert of_kind(rendered("overlays/prod"), "FlinkDeployment")
    assert not of_kind(rendered("overlays/dev"), "FlinkDeployment")
    assert not [
        o for o in rendered("overlays/prod") if o["metadata"]["name"] == "exchange-emulator"
    ]


# --- the configuration and the agent tier template ----------------------------------------


def _config(overlay: str, name: str) -> Settings:
    cm = named(rendered(overlay), "ConfigMap", name)
    return Settings(**yaml.safe_load(cm["data"]["config.yaml"]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_maps_are_valid_configuration(overlay: str) -> None:
    cfg = _config(overlay, "dexorder-config")
    agents = _config(overlay, "dexorder-agent-config")
    assert cfg.gateway.provisioner == "knative"
    assert cfg.knative.namespace == m.NAMESPACE
    assert cfg.knative.agent_config_map == "dexorder-agent-config"
    # the image the provisioner gives agents is one the admission policy lets in
    assert _policy().refusals(agent_pod(image=cfg.knative.agent_image)) == []
    assert agents.gateway.enabled is False and agents.agent.token_private_key is None
    assert agents.relay.server_secret_key is None and agents.relay.publisher_secret_key is None
    # the pod's runtime refuses bubblewrap a fresh /proc: the sandbox runs without one, still
    # in the kernel sandbox (tests/knative/test_agent_seccomp.py); a local agent keeps "mount"
    assert (agents.agent.sandbox.proc, agents.agent.sandbox.isolation) == ("none", "kernel")
    assert SandboxConfig().proc == "mount"


def test_the_agent_tier_template_is_the_builders() -> None:
    spec = importlib.util.spec_from_file_location("agent_render", KNATIVE / "agent/render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (KNATIVE / "agent/tiers.yaml").read_text() == module.render(), (
        "run: python knative/agent/render.py > knative/agent/tiers.yaml"
    )
    objs = rendered("agent")
    policy, policies = _policy(), Policies(of_kind(rendered("overlays/prod"), "NetworkPolicy"))
    for svc in of_kind(objs, "Service"):
        validate(svc)
        pod = pod_of(svc)
        validate(pod)
        assert policy.refusals(pod) == []
        agent = Endpoint("agent", m.NAMESPACE, pod["metadata"]["labels"])
        assert policies.reaches(agent, _endpoints("overlays/prod")["relay"], 5559)
        assert not policies.reaches(agent, Endpoint("api-server", ip="10.96.0.1"), 443)
    for pvc in of_kind(objs, "PersistentVolumeClaim"):
        validate(pvc)
    assert len(of_kind(objs, "Service")) == 3


# --- RBAC ---------------------------------------------------------------------------------


def _can(overlay: str, account: str, verb: str, group: str, resource: str, namespace: str) -> bool:
    """Whether ServiceAccount ``dexorder-system/<account>`` may ``verb`` the resource, from the
    rendered Roles, ClusterRoles and their bindings."""
    objs = rendered(overlay)
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    for binding in objs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s.get("namespace") == "dexorder-system"
            for s in binding.get("subjects", [])
        ):
            continue
        scope = binding["metadata"].get("namespace")  # None: cluster-wide
        if scope not in (None, namespace):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"]))
        for rule in (role or {}).get("rules", []):
            if (
                {group, "*"} & set(rule.get("apiGroups", []))
                and {resource, "*"} & set(rule.get("resources", []))
                and {verb, "*"} & set(rule.get("verbs", []))
            ):
                return True
    return False


KSVC = ("serving.knative.dev", "services")
PVC = ("", "persistentvolumeclaims")
SECRETS = ("", "secrets")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_provisions_agents_and_can_do_nothing_worse(overlay: str) -> None:
    agents = m.NAMESPACE
    for verb in ("create", "get", "list", "watch", "patch"):
        assert _can(overlay, "dexorder-gateway", verb, *KSVC, agents), verb
    for verb in ("create", "get"):
        assert _can(overlay, "dexorder-gateway", verb, *PVC, agents), verb
    assert _can(overlay, "dexorder-gateway", "create", *SECRETS, agents)  # agents' tokens
    for verb in ("delete", "deletecollection"):
        for what in (KSVC, PVC, SECRETS):
            assert not _can(overlay, "dexorder-gateway", verb, *what, agents), (verb, what)
    for namespace in (agents, "dexorder-system", "kube-system"):
        for verb in ("get", "list", "watch"):
            assert not _can(overlay, "dexorder-gateway", verb, *SECRETS, namespace)
        assert not _can(overlay, "dexorder-gateway", "create", "", "pods/exec", namespace)
        assert not _can(overlay, "dexorder-gateway", "create", "", "pods", namespace)
    assert not _can(overlay, "dexorder-gateway", "create", *KSVC, "dexorder-system")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_sweeper_may_only_remove_agents(overlay: str) -> None:
    agents = m.NAMESPACE
    for what in (KSVC, PVC):
        assert _can(overlay, "dexorder-lifecycle", "delete", *what, agents)
        assert _can(overlay, "dexorder-lifecycle", "list", *what, agents)
        for verb in ("create", "update", "patch"):
            assert not _can(overlay, "dexorder-lifecycle", verb, *what, agents)
        assert not _can(overlay, "dexorder-lifecycle", "delete", *what, "dexorder-system")
    assert not _can(overlay, "dexorder-lifecycle", "get", *SECRETS, agents)
    assert not _can(overlay, "dexorder-lifecycle", "delete", "", "pods", agents)
    for account in ("dexorder-function", "dexorder-dataplane"):
        for verb in ("get", "list", "create", "delete"):
            for what in (KSVC, PVC, SECRETS):
                assert not _can(overlay, account, verb, *what, agents)


def _pod_specs(overlay: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for obj in rendered(overlay):
        if obj["kind"] == "Deployment" or (
            obj["kind"] == "Service" and obj["apiVersion"] == "serving.knative.dev/v1"
        ):
            out.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return out


def _mounted(mounts: dict[str, dict[str, Any]], path: str, name: str) -> dict[str, Any]:
    """The volume the file at ``path`` comes from."""
    folder = path.rsplit("/", 1)[0]
    assert folder in mounts, (name, path)
    return mounts[folder]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_reads_the_config_and_secrets_it_mounts(overlay: str) -> None:
    """DEXORDER_CONFIG and DEXORDER_SECRETS name files in what the pod mounts (the
    platform reads config.yaml, then secrets.yaml over it), or /dev/null: no Secret."""
    for name, spec in _pod_specs(overlay):
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}

        config = _mounted(mounts, env["DEXORDER_CONFIG"], name)
        assert config["configMap"]["name"] == "dexorder-config", name
        if env["DEXORDER_SECRETS"] == "/dev/null":
            assert not any("secret" in v for v in volumes.values()), name
        else:
            secret = _mounted(mounts, env["DEXORDER_SECRETS"], name)["secret"]["secretName"]
            assert secret in _allowed(name) and env["DEXORDER_SECRETS"].endswith("/secrets.yaml")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_eventing_and_the_platform_name_the_same_kafka(overlay: str) -> None:
    bootstrap = _config(overlay, "dexorder-config").kafka.bootstrap_servers
    assert bootstrap
    for obj in rendered(overlay):
        if obj["kind"] in ("KafkaSource", "KafkaSink"):
            assert obj["spec"]["bootstrapServers"] == bootstrap.split(","), obj["metadata"]


def test_in_dev_only_the_ingestors_reach_the_exchange_emulator() -> None:
    callers = {
        src for src in PORTS if ("exchange-emulator", 8765) in _reachable("overlays/dev", src)
    }
    assert callers == {"ingestor-binance"}


#: The port each long-lived part serves /healthz on, from its configuration.
HEALTH_PORT = {
    "relay": lambda c: c.relay.health_port,
    "ingestor-binance": lambda c: c.exchange_config("BINANCE").health_port,
    "lake-writer": lambda c: c.writer.health_port,
    "stream-runner": lambda c: c.stream.health_port,
    "embedder": lambda c: c.embedder.port,
    "exchange-emulator": lambda c: c.emulator.port,
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kubelet_probes_each_part_where_it_listens(overlay: str) -> None:
    cfg = _config(overlay, "dexorder-config")
    for obj in of_kind(rendered(overlay), "Deployment"):
        name = obj["metadata"]["name"]
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        probe = container.get("readinessProbe")
        if probe is None:
            assert name == "lifecycle"  # serves no endpoint
            continue
        assert "exec" not in probe
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert probe["httpGet"]["port"] == HEALTH_PORT[name](cfg), name
        # on the pod's addresses, not loopback (the kubelet probes from the node)
        hosts = {k: v for k, v in env.items() if k.endswith("HOST") and k.startswith("DEXORDER_")}
        assert "0.0.0.0" in hosts.values(), (name, hosts)
        assert container["livenessProbe"]["httpGet"] == probe["httpGet"]
