"""Knative: a person's first message on the cluster path, and what the agent image weighs.

* provisioner create → Ready → first MCP call, p50 of 10 new people: the Knative
  provisioner against the loopback Kubernetes API server (the real ``kubernetes`` client
  and httpx; token Secret, PVC and Service created, Ready watched), with an agent process
  standing in for the pod (started when the Service is made, its address reported as the
  Service's); baseline: the bare local provisioner starting the same agent, same call;
* a known person's agent looked up again (Service Ready, the address cache expired), p50;
* the agent image's Python dependencies: the installed size of the distributions its
  requirement set (``knative/images/requirements/agent.txt``) pulls in, measured in this
  virtualenv (same versions).

The loopback server does not validate what is written here (the tests do): its Python
schema checks would be most of the time measured, where the real API server's are not.

What the loopback cannot show is Knative's own part of a cold start (scheduling, the
image pull on a cold node, container start, the activator and readiness probes): the
closing note puts the measured parts against the 2 s budget with that anchor.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.common import pct, row
from dexorder.config import KnativeConfig, Settings
from dexorder.tokens import mint_token, new_keys, token_keys
from gateway.harness.agent_link import AgentLink
from gateway.knative import manifests
from gateway.knative.provisioner import KnativeProvisioner
from gateway.provisioning import AgentEndpoint, LocalProvisioner
from tests.gateway.loopback_kubernetes import LoopbackKubernetes

ROUNDS = 10
AGENT_REQUIREMENTS = Path(__file__).resolve().parents[1] / "knative/images/requirements/agent.txt"


def dependency_closure(requirements: Path) -> dict[str, tuple[int, int]]:
    """Installed bytes of each distribution ``requirements`` needs, dependencies included
    (resolved against this environment; extras only where asked for): without compiled
    bytecode, and the bytecode (an image built with ``--no-compile`` has none)."""
    todo: list[tuple[str, frozenset[str]]] = []
    for line in requirements.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            req = Requirement(text)
            todo.append((req.name, frozenset(req.extras)))
    sizes: dict[str, tuple[int, int]] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        key = canonicalize_name(dist.metadata["Name"])
        if key not in sizes:
            files = [Path(str(dist.locate_file(f))) for f in dist.files or []]
            sized = [(p.suffix == ".pyc", p.stat().st_size) for p in files if p.is_file()]
            sizes[key] = (sum(n for c, n in sized if not c), sum(n for c, n in sized if c))
        for spec in dist.requires or []:
            req = Requirement(spec)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return sizes


async def _first_call(endpoint: AgentEndpoint, token: str) -> None:
    async with AgentLink.open(endpoint.mcp_url, token) as link:
        await link.call("list_strategies", {})


async def _rounds(cfg: Settings, token_file: Path) -> dict[str, Any]:
    """Rounds of both paths taken in turn (so both see the same machine load)."""
    keys = token_keys(cfg)
    local = LocalProvisioner(cfg, env={"DEXORDER_EMBEDDER__ENABLED": "false"})
    pods = LocalProvisioner(cfg, env={"DEXORDER_EMBEDDER__ENABLED": "false"})
    pod_s: dict[str, float] = {}

    async def pod(service: dict[str, Any]) -> str:
        """The pod: the person's agent process; its address becomes the Service's."""
        user = service["metadata"]["annotations"][manifests.ANNOTATION_USER]
        t0 = time.perf_counter()
        endpoint = await pods.ensure(user, service["metadata"]["labels"][manifests.LABEL_TIER])
        pod_s[user] = time.perf_counter() - t0
        return endpoint.mcp_url.removesuffix("/mcp")

    api = LoopbackKubernetes(ready_after_s=0.0, pod=pod, validate=False)
    await api.start()
    token_file.write_text(api.token)
    kcfg = cfg.model_copy(
        update={
            "knative": KnativeConfig(api_server=api.url, token_file=str(token_file), ca_file=None)
        }
    )
    provisioner = KnativeProvisioner(kcfg)
    out: dict[str, list[float]] = {"local": [], "cold": [], "own": [], "warm": []}
    try:
        for i in range(ROUNDS):
            user = f"local{i}"
            t0 = time.perf_counter()
            endpoint = await local.ensure(user, "free")
            await _first_call(endpoint, mint_token(keys, user))
            out["local"].append(time.perf_counter() - t0)
            await local.stop(user)

            user = f"knative{i}"
            t0 = time.perf_counter()
            endpoint = await provisioner.ensure(user, "free")
            ready = time.perf_counter() - t0
            await _first_call(endpoint, mint_token(keys, user))
            out["cold"].append(time.perf_counter() - t0)
            out["own"].append(ready - pod_s[user])  # the provisioner's and the API's part
            await pods.stop(user)  # scaled to zero: one agent process at a time, as above
        for i in range(ROUNDS):
            provisioner._endpoints.clear()  # the address cache expired: look it up again
            t0 = time.perf_counter()
            await provisioner.ensure(f"knative{i}", "free")
            out["warm"].append(time.perf_counter() - t0)
        calls = len(api.requests)
    finally:
        await provisioner.close()
        await local.close()
        await pods.close()
        await api.close()
    return {**out, "api_calls": calls}


async def _provisioner_alone(cfg: Settings, token_file: Path) -> list[float]:
    """create → Ready with a pod that is there at once: the provisioner and the API alone,
    with no agent process competing for the CPU."""
    api = LoopbackKubernetes(ready_after_s=0.0, validate=False)
    await api.start()
    token_file.write_text(api.token)
    kcfg = cfg.model_copy(
        update={
            "knative": KnativeConfig(api_server=api.url, token_file=str(token_file), ca_file=None)
        }
    )
    provisioner = KnativeProvisioner(kcfg)
    times = []
    try:
        await provisioner.ensure("warmup", "free")  # connections and imports
        for i in range(ROUNDS):
            t0 = time.perf_counter()
            await provisioner.ensure(f"alone{i}", "free")
            times.append(time.perf_counter() - t0)
    finally:
        await provisioner.close()
        await api.close()
    return times


async def _run(home: Path) -> dict[str, Any]:
    cfg = Settings(
        home=home,
        embedder={"enabled": False},
        agent={"token_private_key": new_keys().private_pem},
    )
    alone = await _provisioner_alone(cfg, home / "sa-token-alone")
    return {**await _rounds(cfg, home / "sa-token"), "alone": alone}


def main() -> dict[str, float]:
    print("knative: create → Ready → first MCP call (loopback API server, agent as the pod)")
    with tempfile.TemporaryDirectory(prefix="dexorder-bench-knative-") as tmp:
        got = asyncio.run(_run(Path(tmp)))
    local_p50, knative_p50 = pct(got["local"], 50), pct(got["cold"], 50)
    own_p50, warm_p50 = pct(got["own"], 50), pct(got["warm"], 50)
    alone_p50 = pct(got["alone"], 50)
    sizes = dependency_closure(AGENT_REQUIREMENTS)
    total_mb = sum(code for code, _ in sizes.values()) / 1e6
    bytecode_mb = sum(pyc for _, pyc in sizes.values()) / 1e6
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1][0])[:5]
    row("baseline: local provisioner start + first call, p50", f"{local_p50 * 1000:.0f} ms")
    row("knative: create → Ready → first call, p50 of 10", f"{knative_p50 * 1000:.0f} ms")
    row(
        "knative: the provisioner's own part, p50",
        f"{own_p50 * 1000:.0f} ms",
        f"create → Ready less the pod's start ({got['api_calls']} API requests in all)",
    )
    row(
        "knative: create → Ready, the pod there at once, p50",
        f"{alone_p50 * 1000:.0f} ms",
        "the provisioner and the API server alone (6 API calls + a watch)",
    )
    row("knative: known person looked up again, p50", f"{warm_p50 * 1000:.1f} ms")
    row(
        "agent image: Python dependencies installed",
        f"{total_mb:.0f} MB",
        f"{len(sizes)} distributions, no bytecode (+{bytecode_mb:.0f} MB compiled); largest "
        + ", ".join(f"{n} {b / 1e6:.0f}" for n, (b, _) in biggest),
    )
    agent_start = local_p50
    print(
        "  note: on Knative a cold start is Knative's part (schedule, container start, "
        "activator, readiness;\n"
        "  2-4 s without a mesh) plus the agent's own start measured here "
        f"({agent_start:.2f} s with its first call) plus the provisioner's "
        f"{own_p50 * 1000:.0f} ms;\n"
        f"  against a 2 s budget the agent's start alone uses {agent_start / 2 * 100:.0f}% of it, "
        f"and its {total_mb:.0f} MB of dependencies set the image pull on a cold node."
    )
    return {
        "local_p50_s": local_p50,
        "knative_p50_s": knative_p50,
        "knative_overhead_ms": own_p50 * 1000,
        "provisioner_alone_ms": alone_p50 * 1000,
        "warm_lookup_p50_ms": warm_p50 * 1000,
        "agent_deps_mb": total_mb,
    }
