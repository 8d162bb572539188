"""Kubernetes NetworkPolicy semantics, enough to compute who reaches whom offline.

A pod is isolated for egress (ingress) once any policy of its namespace selects it with
``Egress`` (``Ingress``) in its ``policyTypes``; then a connection is allowed only if one
of those policies' rules matches the peer and the port. A connection needs both the
source's egress and the destination's ingress. Endpoints that are not pods (the API
server, the internet) are matched by ``ipBlock`` only and have no policies of their own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or an address outside the pod network."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.0.10"

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None

    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}

    def __hash__(self) -> int:
        return hash(self.name)


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (``matchLabels`` and ``matchExpressions``); ``{}`` selects all."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if not other.is_pod:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and other.namespace != policy_ns:
        return False  # a podSelector alone means the policy's own namespace
    if ns_sel is not None and not selects(ns_sel, other.namespace_labels()):
        return False
    return selects(pod_sel, other.labels) if pod_sel is not None else True


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        low = p.get("port")
        if low is None or (low <= port <= p.get("endPort", low)):
            return True
    return False


class Policies:
    """The NetworkPolicies of a rendered manifest set."""

    def __init__(self, policies: list[dict[str, Any]]) -> None:
        self.policies = policies

    def _applying(self, pod: Endpoint, direction: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and direction in p["spec"].get("policyTypes", ["Ingress"])
            and selects(p["spec"].get("podSelector") or {}, pod.labels)
        ]

    def _allowed(
        self, pod: Endpoint, other: Endpoint, port: int, protocol: str, direction: str
    ) -> bool:
        applying = self._applying(pod, direction)
        if not applying:
            return True  # not isolated
        key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        for policy in applying:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(
                    _peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
                )
                if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                    return True
        return False

    def reaches(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Whether ``src`` may open a connection to ``dst`` on ``port``."""
        if src.is_pod and not self._allowed(src, dst, port, protocol, "Egress"):
            return False
        return not (dst.is_pod and not self._allowed(dst, src, port, protocol, "Ingress"))
