"""A person's agent on Knative: its Service, workspace PVC and tokens Secret, per tier.

The objects come from ONE template, ``knative/base/agent/template.yaml`` (in the cluster
the ConfigMap ``dexorder-agent-template`` mounted into the gateway), so that what kustomize
ships, what the tests validate and what the Knative provisioner creates are the same.
This module only fills the template in; it does no I/O beyond reading that file.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dexorder.config import ConfigError
from dexorder.tokens import check_user_id

#: Where agents live in the cluster.
AGENT_NAMESPACE = "dexorder-agents"
#: The template in this checkout; the gateway's image holds it at the same relative place,
#: and ``DEXORDER_AGENT_TEMPLATE`` (the mounted ConfigMap) wins over it.
DEFAULT_TEMPLATE = (
    Path(__file__).resolve().parents[2] / "knative" / "base" / "agent" / "template.yaml"
)
#: The container port Knative routes to (its queue-proxy forwards to it).
AGENT_PORT = 8080
#: The label naming the person (their id, made a valid label value).
USER_LABEL = "dexorder.io/user"
ROLE_LABEL = "dexorder.io/role"

Tier = Literal["free", "pro", "enterprise"]
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Mi|Gi|Ti)?$"
_DURATION = r"^[0-9]+(s|m|h)$"


class TierSpec(BaseModel):
    """One tier's resources and idle behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory: str = Field(pattern=_QUANTITY)
    cpu: str = Field(pattern=_QUANTITY)
    storage: str = Field(pattern=_QUANTITY)
    #: scale-to-zero-pod-retention-period: how long the pod stays after its last request
    retention: str = Field(pattern=_DURATION)
    #: "1": never scaled to zero
    min_scale: Literal["0", "1"]


class _TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: dict[Tier, TierSpec]
    service: dict[str, Any]
    pvc: dict[str, Any]
    tokens_secret: dict[str, Any]


def agent_name(user: str) -> str:
    """The Kubernetes name of ``user``'s agent objects.

    A DNS-1035 label (lower-case letters, digits, ``-``; starts with a letter) short
    enough that Knative's revision names (``<name>-00001``) and the tokens Secret
    (``<name>-tokens``) stay within 63 characters. Person ids may hold ``_`` and run to
    63 characters, so the id is cleaned and cut, and a hash of the whole id keeps two
    people from ever sharing a name.
    """
    check_user_id(user)
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^a-z0-9-]", "-", user)[:36].strip("-")
    return f"agent-{cleaned}-{digest}" if cleaned else f"agent-{digest}"


def user_label(user: str) -> str:
    """``user`` as a label value (63 characters of ``[a-z0-9_.-]``: person ids are)."""
    return check_user_id(user)


class AgentTemplate:
    """The parsed template; :meth:`service`, :meth:`pvc` and :meth:`tokens_secret` fill it."""

    def __init__(self, data: _TemplateFile, source: str) -> None:
        self._data = data
        self.source = source

    @property
    def tiers(self) -> dict[Tier, TierSpec]:
        return dict(self._data.tiers)

    def tier(self, tier: str) -> TierSpec:
        try:
            return self._data.tiers[tier]  # type: ignore[index]
        except KeyError:
            raise ConfigError(f"{self.source}: no agent tier {tier!r}") from None

    def _labelled(self, obj: dict[str, Any], user: str, name: str) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        meta = out.setdefault("metadata", {})
        meta["name"] = name
        meta["namespace"] = AGENT_NAMESPACE
        meta.setdefault("labels", {})[USER_LABEL] = user_label(user)
        return out

    def service(self, user: str, tier: str) -> dict[str, Any]:
        """The Knative Service running ``user``'s agent at ``tier``."""
        spec = self.tier(tier)
        name = agent_name(user)
        svc = self._labelled(self._data.service, user, name)
        template = svc["spec"]["template"]
        template["metadata"].setdefault("labels", {})[USER_LABEL] = user_label(user)
        notes = template["metadata"].setdefault("annotations", {})
        notes["autoscaling.knative.dev/min-scale"] = spec.min_scale
        notes["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] = spec.retention
        pod = template["spec"]
        (container,) = pod["containers"]
        container["args"] = ["--user", user, "--port", str(AGENT_PORT)]
        limits = {"memory": spec.memory, "cpu": spec.cpu}
        container["resources"] = {"requests": dict(limits), "limits": dict(limits)}
        for env in container.get("env", []):
            if env["name"] == "DEXORDER_AGENT__TIER":
                env["value"] = tier
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                volume["persistentVolumeClaim"]["claimName"] = name
            if "secret" in volume:
                volume["secret"]["secretName"] = f"{name}-tokens"
        return svc

    def pvc(self, user: str, tier: str) -> dict[str, Any]:
        """``user``'s workspace volume at ``tier`` (kept while the agent is scaled to zero)."""
        claim = self._labelled(self._data.pvc, user, agent_name(user))
        claim["spec"]["resources"] = {"requests": {"storage": self.tier(tier).storage}}
        return claim

    def tokens_secret(self, user: str, tokens_json: str) -> dict[str, Any]:
        """The Secret holding ``user``'s agent tokens (``AgentTokens`` as JSON)."""
        secret = self._labelled(self._data.tokens_secret, user, f"{agent_name(user)}-tokens")
        secret["stringData"] = {"tokens.json": tokens_json}
        return secret


def load_template(path: Path | None = None) -> AgentTemplate:
    """The agent template at ``path`` (default: ``DEXORDER_AGENT_TEMPLATE``, else the
    checkout's); :class:`ConfigError` saying what is wrong."""
    where = path or Path(os.environ.get("DEXORDER_AGENT_TEMPLATE") or DEFAULT_TEMPLATE)
    try:
        data = _TemplateFile.model_validate(yaml.safe_load(where.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return AgentTemplate(data, str(where))
