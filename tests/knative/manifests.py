"""Helpers of the manifest tests: rendering the overlays, strict schema validation, the
admission policy's CEL, an agent pod as Knative would make it."""

from __future__ import annotations

import copy
import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from gateway.knative import manifests as m

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"
SCHEMAS = ROOT.parent / "shared" / "schemas"
K8S_VERSION = "1.33"
QUEUE_IMAGE = "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:" + "ab" * 32
AGENT_IMAGE = "ghcr.io/dexorder/agent:0.1.0"
#: libyaml where present: the CRD files are large
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize knative/<overlay>``, as objects."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(KNATIVE / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return tuple(d for d in yaml.load_all(out, Loader=_LOADER) if d)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` refusing unknown fields wherever it lists its fields (the API server
    would prune them silently) unless it keeps unknown fields on purpose."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("properties")
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    # the top level: every object has these, whether the CRD lists them or not
    out.setdefault("properties", {}).update(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        }
    )
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the strict schema, for every CRD kept in ../shared/schemas/crds."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((SCHEMAS / "crds").glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_LOADER):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                out[(f"{group}/{version['name']}", kind)] = strict(schema)
    return out


_META = {"name", "namespace", "labels", "annotations"}


@functools.cache
def builtin_validator(api_version: str, kind: str) -> Any:
    """kubernetes-validate's strict schema of a built-in kind, compiled once (its own
    ``validate`` parses the whole definitions file on every call)."""
    from kubernetes_validate.utils import (
        SchemaNotFoundError,
        schema_contents,
    )
    from referencing import Registry, Resource

    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{K8S_VERSION}.0-local-strict"
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", K8S_VERSION)
    except FileNotFoundError:
        raise SchemaNotFoundError(version=K8S_VERSION, kind=kind, api_version=api_version) from None
    definitions = schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate(obj: dict[str, Any]) -> None:
    """Raise unless ``obj`` is valid: CRD kinds against their schema, built-in kinds against
    Kubernetes' (strict: unknown fields fail); an unknown kind fails too."""
    key = (obj["apiVersion"], obj["kind"])
    schema = crd_schemas().get(key)
    if schema is None:
        builtin_validator(*key).validate(obj)
        return
    extra = set(obj.get("metadata", {})) - _META
    if extra:
        raise jsonschema.ValidationError(f"unknown metadata fields {sorted(extra)}")
    crd_validator(*key).validate(obj)


@functools.cache
def crd_validator(api_version: str, kind: str) -> Any:
    """The compiled validator of a CRD's strict schema (``jsonschema.validate`` would
    check the large schema itself against the meta-schema on every call)."""
    schema = crd_schemas()[(api_version, kind)]
    return jsonschema.validators.validator_for(schema)(schema)


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    return found


def agent_pod(tier: str = "free", user: str = "alice", image: str = AGENT_IMAGE) -> dict[str, Any]:
    """The pod Knative makes of ``user``'s agent Service (see :func:`pod_of`)."""
    return pod_of(m.agent_service(user, m.DEFAULT_TIERS[tier], image))


def pod_of(svc: dict[str, Any]) -> dict[str, Any]:
    """The pod Knative makes of Service ``svc``: its revision's pod spec plus the
    queue-proxy Knative injects (restricted securityContext, limits from config-deployment)."""
    template = svc["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    for knative_only in (
        "containerConcurrency",
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
    ):
        spec.pop(knative_only, None)
    deployment = yaml.safe_load(
        (KNATIVE / "base/knative-serving/config-deployment.yaml").read_text()
    )
    d = deployment["data"]
    spec["containers"].append(
        {
            "name": "queue-proxy",
            "image": QUEUE_IMAGE,
            "ports": [{"containerPort": 8012, "name": "http1"}],
            "resources": {
                "requests": {
                    "cpu": d["queue-sidecar-cpu-request"],
                    "memory": d["queue-sidecar-memory-request"],
                },
                "limits": {
                    "cpu": d["queue-sidecar-cpu-limit"],
                    "memory": d["queue-sidecar-memory-limit"],
                },
            },
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{svc['metadata']['name']}-00001-deployment-abc",
            "namespace": svc["metadata"]["namespace"],
            "labels": {
                **template["metadata"]["labels"],
                "serving.knative.dev/service": svc["metadata"]["name"],
            },
        },
        "spec": spec,
    }


class AdmissionPolicy:
    """A ValidatingAdmissionPolicy's variables and validations, evaluated with celpy."""

    def __init__(self, policy: dict[str, Any]) -> None:
        env = celpy.Environment()
        spec = policy["spec"]
        self.variables = [
            (v["name"], env.program(env.compile(v["expression"])))
            for v in spec.get("variables", [])
        ]
        self.validations = [
            (v["message"], env.program(env.compile(v["expression"]))) for v in spec["validations"]
        ]

    def refusals(self, obj: dict[str, Any]) -> list[str]:
        """The messages of the validations ``obj`` fails (empty: admitted); an expression
        that errors counts as failed, as the API server's failurePolicy Fail makes it."""
        variables = celpy.celtypes.MapType({})
        activation: dict[str, Any] = {"object": json_to_cel(obj), "variables": variables}
        for name, program in self.variables:
            variables[celpy.celtypes.StringType(name)] = program.evaluate(activation)
        failed = []
        for message, program in self.validations:
            try:
                result: object = program.evaluate(activation)
            except CELEvalError:
                result = False
            if isinstance(result, Exception) or result != celpy.celtypes.BoolType(True):
                failed.append(message)
        return failed
