"""The per-person agent's Kubernetes objects: the ONE template of them.

Both users of the template build from here, so the cluster runs what the tests check:

* the Knative provisioner (:mod:`gateway.knative.provisioner`) creates, for each person,
  the workspace PVC (:func:`agent_pvc`), the Secret with the agent's own tokens
  (:func:`agent_tokens_secret`) and the Knative Service (:func:`agent_service`);
* ``knative/agent/tiers.yaml`` (one example agent Service + PVC per tier, for review and
  ``kubectl``) is rendered from these by ``knative/agent/render.py``; a test in
  ``tests/knative`` keeps it current, and checks the agent pod against the admission
  policy and the NetworkPolicies.

What every agent object carries (the sweeper deletes nothing without all of it):
the labels :data:`PLATFORM_LABELS`, ``dexorder.io/person`` (a hash of the person's id, which
may not be a valid label value) and the annotation ``dexorder.io/user`` (the id itself).

The agent image's ENTRYPOINT runs ``python -m agent`` as uid 10001; the Service passes
``--user <id> --port 8080`` and the environment below. In the pod the agent sees:

* ``/var/lib/dexorder`` (``DEXORDER_HOME``): the person's PVC, read-write (their folder is
  ``/var/lib/dexorder/agents/<id>``);
* ``/etc/dexorder/config/config.yaml``: the ConfigMap :data:`AGENT_CONFIG_MAP` (key
  ``config.yaml``), the agents' configuration without any secret: relay, embedder and
  gateway addresses, the token *public* key (``agent.token_public_key``);
* ``/var/run/dexorder/tokens/tokens.json``: its own tokens (service + embedder, the
  :class:`dexorder.tokens.AgentTokens` JSON), from its Secret, renewed by the gateway and
  re-read on every use; beside it ``revoked_tokens``, the ids of the person's revoked
  tokens (re-read on every request: the kubelet brings a changed Secret within a minute);
* ``/etc/dexorder/secrets/secrets.yaml`` (``DEXORDER_SECRETS``): the lake's read-only
  credentials, the same for every agent (Secret :data:`LAKE_SECRET`: ``lake.catalog_uri``
  with a catalog role that may only read, ``lake.warehouse``, ``lake.properties`` with S3
  keys that may only read the warehouse; knative/lake/). Agents read history straight
  from the lake (DESIGN), which holds only market data, the same for everyone;
* ``/tmp``: a scratch folder on the node's disk (the root filesystem is read-only).

Idleness is Knative's: the tier's idle time (``agent.idle_timeout_s``) becomes
``autoscaling.knative.dev/scale-to-zero-pod-retention-period`` (at most 1 h, Knative's
window maximum), a tier that never idles gets ``min-scale: "1"``, and the agent's own idle
exit is switched off in the pod. ``max-scale: "1"``: one agent per person (it holds a lock
in its folder). The PVC stays while the Service is scaled to zero.

The pod needs Knative feature flags that are off by default (``config-features``):
``kubernetes.podspec-persistent-volume-claim``, ``kubernetes.podspec-persistent-volume-write``
and ``kubernetes.podspec-securitycontext`` (the pod's ``fsGroup`` and seccomp profile);
``kubernetes.podspec-runtimeclassname`` too if ``knative.agent_runtime_class`` is set.

Seccomp: the pod runs under the ``Localhost`` profile :data:`SECCOMP_PROFILE` (the runtime's
default rules plus what bubblewrap needs for the person's code sandbox:
knative/seccomp/render.py), which a DaemonSet puts on every node
(knative/base/seccomp-profile.yaml); the admission policy admits no other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from dexorder.config import AgentConfig, KnativeConfig
from dexorder.tokens import check_user_id

#: Where every agent lives.
NAMESPACE = "dexorder-agents"
#: The agents' configuration (no secret in it), in :data:`NAMESPACE`.
AGENT_CONFIG_MAP = "dexorder-agent-config"
#: The agents' ServiceAccount: no role bound to it, and its token is not mounted.
AGENT_SERVICE_ACCOUNT = "dexorder-agent"
#: The port Knative routes to (it sets ``PORT`` too).
AGENT_PORT = 8080
#: The person the kustomize tier template is written for.
EXAMPLE_PERSON = "example"
#: The agent's uid and gid in its image (not root).
AGENT_UID = 10001

DATA_MOUNT = "/var/lib/dexorder"
CONFIG_MOUNT = "/etc/dexorder/config"
TOKENS_MOUNT = "/var/run/dexorder/tokens"
TOKENS_KEY = "tokens.json"
#: Beside the tokens: the ids of the person's revoked tokens, one a line (the agent
#: refuses them as it refuses those in its ``state/revoked_tokens``).
REVOKED_KEY = "revoked_tokens"
#: The lake's read-only credentials, one Secret for all agents (key ``secrets.yaml``).
LAKE_SECRET = "dexorder-agent-lake"
LAKE_MOUNT = "/etc/dexorder/secrets"
SCRATCH_SIZE = "256Mi"
#: Longest a request to an agent may run or wait for its first byte: a backtest sweep (the
#: sandbox's wall limit is 30 s a run); within Knative's 600 s cap.
REQUEST_TIMEOUT_S = 300
#: Requests one agent serves at once: a turn's tool calls come one after another, but the
#: web page, Telegram and an external MCP client may call together.
CONTAINER_CONCURRENCY = 10

LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_ROLE = "dexorder.io/role"
LABEL_PERSON = "dexorder.io/person"
LABEL_TIER = "dexorder.io/tier"
ANNOTATION_USER = "dexorder.io/user"
#: The labels every agent object carries; :data:`AGENT_SELECTOR` selects by them.
PLATFORM_LABELS = {
    LABEL_PART_OF: "dexorder",
    LABEL_ROLE: "agent",
}
AGENT_SELECTOR = ",".join(f"{k}={v}" for k, v in PLATFORM_LABELS.items())

MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
VISIBILITY = "networking.knative.dev/visibility"
#: Knative's limit on the retention period (its autoscaling window maximum).
MAX_RETENTION_S = 3600

TierName = Literal["free", "pro", "enterprise"]
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")


class Tier(BaseModel):
    """What a tier's agent gets: memory and CPU limits, a CPU request (agents mostly wait),
    its workspace size, and how long it stays up idle (seconds; None: always up)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TierName
    memory: str
    cpu: str
    cpu_request: str
    storage: str
    idle_s: int | None = Field(ge=0, le=MAX_RETENTION_S)

    @field_validator("memory", "cpu", "cpu_request", "storage")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError(f"not a Kubernetes quantity: {value!r}")
        return value


def tiers_from(knative: KnativeConfig, idle_timeout_s: dict[str, int | None]) -> dict[str, Tier]:
    """The tiers as configured: resources from ``knative.tiers``, idle time from
    ``agent.idle_timeout_s`` (one setting for both provisioners)."""
    return {
        name: Tier(
            name=name,  # checked by the model: free, pro or enterprise
            memory=t.memory,
            cpu=t.cpu,
            cpu_request=t.cpu_request,
            storage=t.storage,
            idle_s=idle_timeout_s.get(name),
        )
        for name, t in knative.tiers.items()
    }


#: DESIGN's tiers (the configuration's defaults): free 512Mi/500m/1Gi/15 min,
#: pro 2Gi/2000m/10Gi/60 min, enterprise 4Gi/4000m/50Gi/never idle.
DEFAULT_TIERS: dict[str, Tier] = tiers_from(KnativeConfig(), AgentConfig().idle_timeout_s)


# --- names ------------------------------------------------------------------------------


def person_hash(user: str) -> str:
    """A label-safe stand-in for ``user`` (an id may end in ``_``, which a label may not)."""
    return hashlib.sha256(check_user_id(user).encode()).hexdigest()[:16]


def service_name(user: str) -> str:
    """The Knative Service of ``user``'s agent: a DNS label (no ``_``), short enough for
    Knative's revision names, and one per person (the hash tells ``a_b`` from ``a-b``)."""
    readable = check_user_id(user).replace("_", "-")[:30].strip("-")
    return f"agent-{readable}-{person_hash(user)[:8]}" if readable else f"agent-{person_hash(user)}"


def pvc_name(user: str) -> str:
    return f"{service_name(user)}-workspace"


def tokens_secret_name(user: str) -> str:
    return f"{service_name(user)}-tokens"


def labels(user: str, tier: str | None = None) -> dict[str, str]:
    """The labels of ``user``'s agent objects."""
    out = {**PLATFORM_LABELS, LABEL_PERSON: person_hash(user)}
    if tier is not None:
        out[LABEL_TIER] = tier
    return out


def retention_period(seconds: int) -> str:
    """A Go duration Knative parses: ``15m``, ``60m``, ``90s``."""
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


# --- the objects, typed ---------------------------------------------------------------


class _K8s(BaseModel):
    """Kubernetes field names are camelCase; unset fields are left out."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    def manifest(self) -> dict[str, Any]:
        """The object as the API server takes it (JSON values, camelCase, no nulls)."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return out


class ObjectMeta(_K8s):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str] | None = None


class TemplateMeta(_K8s):
    labels: dict[str, str]
    annotations: dict[str, str]


class EnvVar(_K8s):
    name: str
    value: str


class ContainerPort(_K8s):
    name: Literal["http1", "h2c"] = "http1"
    container_port: int


class HttpGet(_K8s):
    path: str
    port: int


class Probe(_K8s):
    http_get: HttpGet
    period_seconds: int


class Resources(_K8s):
    requests: dict[str, str]
    limits: dict[str, str]


class Capabilities(_K8s):
    drop: list[str]


#: The agents' seccomp profile, relative to the kubelet's seccomp folder
#: (``/var/lib/kubelet/seccomp``): knative/base/seccomp/agent.json, installed by
#: knative/base/seccomp-profile.yaml.
SECCOMP_PROFILE = "dexorder/agent.json"


class SeccompProfile(_K8s):
    type: Literal["Localhost"] = "Localhost"
    localhost_profile: str = SECCOMP_PROFILE


class ContainerSecurityContext(_K8s):
    run_as_non_root: bool = True
    run_as_user: int = AGENT_UID
    run_as_group: int = AGENT_UID
    allow_privilege_escalation: bool = False
    read_only_root_filesystem: bool = True
    capabilities: Capabilities = Capabilities(drop=["ALL"])
    seccomp_profile: SeccompProfile = SeccompProfile()


class PodSecurityContext(_K8s):
    """Needs ``kubernetes.podspec-securitycontext``: ``fsGroup`` makes the PVC writable."""

    run_as_non_root: bool = True
    run_as_user: int = AGENT_UID
    run_as_group: int = AGENT_UID
    fs_group: int = AGENT_UID
    seccomp_profile: SeccompProfile = SeccompProfile()


class VolumeMount(_K8s):
    name: str
    mount_path: str
    read_only: bool | None = None


class Container(_K8s):
    name: str
    image: str
    args: list[str]
    ports: list[ContainerPort]
    env: list[EnvVar]
    resources: Resources
    readiness_probe: Probe
    security_context: ContainerSecurityContext
    volume_mounts: list[VolumeMount]


class PvcSource(_K8s):
    claim_name: str
    read_only: bool = False


class SecretSource(_K8s):
    secret_name: str


class ConfigMapSource(_K8s):
    name: str


class EmptyDirSource(_K8s):
    """On the node's disk: an in-memory one would count against the tier's memory."""

    size_limit: str


class Volume(_K8s):
    name: str
    persistent_volume_claim: PvcSource | None = None
    secret: SecretSource | None = None
    config_map: ConfigMapSource | None = None
    empty_dir: EmptyDirSource | None = None


class RevisionSpec(_K8s):
    service_account_name: str
    automount_service_account_token: bool = False
    enable_service_links: bool = False
    container_concurrency: int = CONTAINER_CONCURRENCY
    timeout_seconds: int = REQUEST_TIMEOUT_S
    response_start_timeout_seconds: int = REQUEST_TIMEOUT_S
    security_context: PodSecurityContext = PodSecurityContext()
    #: e.g. gVisor's ``runsc`` (``knative.agent_runtime_class``); needs Knative's
    #: ``kubernetes.podspec-runtimeclassname``.
    runtime_class_name: str | None = None
    containers: list[Container]
    volumes: list[Volume]


class RevisionTemplate(_K8s):
    metadata: TemplateMeta
    spec: RevisionSpec


class ServiceSpec(_K8s):
    template: RevisionTemplate


class KnativeService(_K8s):
    api_version: Literal["serving.knative.dev/v1"] = "serving.knative.dev/v1"
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec


class StorageRequest(_K8s):
    requests: dict[str, str]


class PvcSpec(_K8s):
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteOncePod"]] = ["ReadWriteOnce"]
    resources: StorageRequest
    storage_class_name: str | None = None


class PersistentVolumeClaim(_K8s):
    api_version: Literal["v1"] = "v1"
    kind: Literal["PersistentVolumeClaim"] = "PersistentVolumeClaim"
    metadata: ObjectMeta
    spec: PvcSpec


class Secret(_K8s):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    type: Literal["Opaque"] = "Opaque"
    string_data: dict[str, str]


# --- the builders -----------------------------------------------------------------------


def _meta(user: str, name: str, namespace: str, tier: str | None = None) -> ObjectMeta:
    return ObjectMeta(
        name=name,
        namespace=namespace,
        labels=labels(user, tier),
        annotations={ANNOTATION_USER: user},
    )


def autoscaling(tier: Tier) -> dict[str, str]:
    """The revision's autoscaling annotations (values are strings, as Knative wants)."""
    if tier.idle_s is None:
        return {MIN_SCALE: "1", MAX_SCALE: "1"}
    return {MIN_SCALE: "0", MAX_SCALE: "1", RETENTION: retention_period(tier.idle_s)}


def agent_env(tier: Tier) -> list[EnvVar]:
    """The agent's environment in the pod (see the module docstring)."""
    never_idle = json.dumps(dict.fromkeys(DEFAULT_TIERS))  # Knative scales it to zero
    return [
        EnvVar(name="DEXORDER_HOME", value=DATA_MOUNT),
        EnvVar(name="DEXORDER_CONFIG", value=f"{CONFIG_MOUNT}/config.yaml"),
        EnvVar(name="DEXORDER_SECRETS", value=f"{LAKE_MOUNT}/secrets.yaml"),
        EnvVar(name="DEXORDER_AGENT__HOST", value="0.0.0.0"),
        EnvVar(name="DEXORDER_AGENT__TIER", value=tier.name),
        EnvVar(name="DEXORDER_AGENT__TOKENS_FILE", value=f"{TOKENS_MOUNT}/{TOKENS_KEY}"),
        EnvVar(name="DEXORDER_AGENT__IDLE_TIMEOUT_S", value=never_idle),
        EnvVar(name="HOME", value="/tmp"),
        EnvVar(name="TMPDIR", value="/tmp"),
    ]


def agent_service_model(
    user: str,
    tier: Tier,
    image: str,
    *,
    namespace: str = NAMESPACE,
    config_map: str = AGENT_CONFIG_MAP,
    service_account: str = AGENT_SERVICE_ACCOUNT,
    runtime_class: str | None = None,
) -> KnativeService:
    """``user``'s agent as a Knative Service (typed)."""
    meta = _meta(user, service_name(user), namespace, tier.name)
    service_labels = {**meta.labels, VISIBILITY: "cluster-local"}  # never reachable outside
    container = Container(
        name="agent",
        image=image,
        args=["--user", user, "--port", str(AGENT_PORT)],
        ports=[ContainerPort(container_port=AGENT_PORT)],
        env=agent_env(tier),
        resources=Resources(
            requests={"cpu": tier.cpu_request, "memory": tier.memory},
            limits={"cpu": tier.cpu, "memory": tier.memory},
        ),
        readiness_probe=Probe(http_get=HttpGet(path="/healthz", port=AGENT_PORT), period_seconds=1),
        security_context=ContainerSecurityContext(),
        volume_mounts=[
            VolumeMount(name="workspace", mount_path=DATA_MOUNT),
            VolumeMount(name="config", mount_path=CONFIG_MOUNT, read_only=True),
            VolumeMount(name="tokens", mount_path=TOKENS_MOUNT, read_only=True),
            VolumeMount(name="lake", mount_path=LAKE_MOUNT, read_only=True),
            VolumeMount(name="tmp", mount_path="/tmp"),
        ],
    )
    volumes = [
        Volume(name="workspace", persistent_volume_claim=PvcSource(claim_name=pvc_name(user))),
        Volume(name="config", config_map=ConfigMapSource(name=config_map)),
        Volume(name="tokens", secret=SecretSource(secret_name=tokens_secret_name(user))),
        Volume(name="lake", secret=SecretSource(secret_name=LAKE_SECRET)),
        Volume(name="tmp", empty_dir=EmptyDirSource(size_limit=SCRATCH_SIZE)),
    ]
    return KnativeService(
        metadata=meta.model_copy(update={"labels": service_labels}),
        spec=ServiceSpec(
            template=RevisionTemplate(
                metadata=TemplateMeta(labels=meta.labels, annotations=autoscaling(tier)),
                spec=RevisionSpec(
                    service_account_name=service_account,
                    runtime_class_name=runtime_class,
                    containers=[container],
                    volumes=volumes,
                ),
            )
        ),
    )


def agent_service(
    user: str,
    tier: Tier,
    image: str,
    *,
    namespace: str = NAMESPACE,
    config_map: str = AGENT_CONFIG_MAP,
    service_account: str = AGENT_SERVICE_ACCOUNT,
    runtime_class: str | None = None,
) -> dict[str, Any]:
    """``user``'s agent as a Knative Service manifest (``serving.knative.dev/v1``)."""
    return agent_service_model(
        user,
        tier,
        image,
        namespace=namespace,
        config_map=config_map,
        service_account=service_account,
        runtime_class=runtime_class,
    ).manifest()


def agent_pvc_model(
    user: str, tier: Tier, *, namespace: str = NAMESPACE, storage_class: str | None = None
) -> PersistentVolumeClaim:
    """``user``'s workspace volume (kept while the agent is scaled to zero)."""
    return PersistentVolumeClaim(
        metadata=_meta(user, pvc_name(user), namespace, tier.name),
        spec=PvcSpec(
            resources=StorageRequest(requests={"storage": tier.storage}),
            storage_class_name=storage_class,
        ),
    )


def agent_pvc(
    user: str, tier: Tier, *, namespace: str = NAMESPACE, storage_class: str | None = None
) -> dict[str, Any]:
    """``user``'s workspace PVC manifest (``v1``)."""
    return agent_pvc_model(user, tier, namespace=namespace, storage_class=storage_class).manifest()


def agent_tokens_secret(
    user: str,
    tokens_json: str,
    *,
    namespace: str = NAMESPACE,
    revoked: Iterable[str] = (),
) -> dict[str, Any]:
    """The Secret holding ``user``'s agent's own tokens (``tokens_json``: an
    :class:`~dexorder.tokens.AgentTokens` as JSON) and the ids of the person's ``revoked``
    tokens; the only secret of its own an agent gets (all share the lake's read-only one)."""
    return Secret(
        metadata=_meta(user, tokens_secret_name(user), namespace),
        string_data={
            TOKENS_KEY: tokens_json,
            REVOKED_KEY: "".join(f"{t}\n" for t in sorted(revoked)),
        },
    ).manifest()
