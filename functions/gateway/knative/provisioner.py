"""People's agents as Knative Services: the gateway's provisioner on a cluster
(``gateway.provisioner: knative``; the local one stays the default).

``ensure(user, tier)`` makes sure the person's token Secret, workspace PVC and Knative
Service exist (create, or get on ``404``; ``409 AlreadyExists`` from a concurrent
creator, another gateway replica say, is fine), waits until the Service is ``Ready`` (a
watch, re-opened with backoff; ``knative.ready_timeout_s``, two minutes) and returns its
cluster-local MCP address. Two messages of one person at once make one Service (a lock
per person here, create-or-get across replicas). The pod itself may be scaled to zero:
the first MCP request wakes it through Knative's activator.

What goes wrong is a :class:`~gateway.provisioning.ProvisioningError` whose message is
for the person and whose ``status`` the gateway answers with (503): the API server's
refusals (403 Forbidden, 404 NotFound: namespace or Knative missing, 422 Invalid) with
its Status message, a Service that never becomes Ready with its condition's reason and
message, an API server out of reach.

Not done here, by design: stopping (Knative scales to zero after the tier's retention),
deleting (the gateway may not delete agents; the lifecycle sweeper removes those of
deleted accounts). Revoked tokens: the gateway, the only door to an agent, refuses them at
once; their ids also go into the agent's token Secret (``revoked_tokens``), which the
agent reads on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from dexorder.config import Settings
from dexorder.tokens import AgentTokens, check_user_id, embedder_token, mint_token, token_keys
from gateway.knative import manifests
from gateway.knative.api import Cluster, ClusterError, Condition, KService
from gateway.leases import Leases, LocalLeases
from gateway.provisioning import (
    TOKEN_TTL_S,
    AgentEndpoint,
    AgentState,
    ProvisioningError,
    agent_lease,
)

log = structlog.get_logger(part="gateway")

#: A Ready Service's address is reused this long before it is looked up again.
ENDPOINT_REUSE_S = 30.0


class AgentRefused(ProvisioningError):
    """The API server refused to make or read the person's agent."""


class AgentNotReady(ProvisioningError):
    """The person's agent Service did not become Ready (its condition says why)."""

    def __init__(self, message: str, reason: str | None) -> None:
        super().__init__(message)
        self.reason = reason


class ClusterUnreachable(ProvisioningError):
    """The API server could not be reached."""


def refusal(exc: ClusterError, what: str) -> ProvisioningError:
    """The person's error for the API server's answer to ``what`` (pure)."""
    said = f"{exc.reason}: {exc.message}"
    if exc.code == 0:
        return ClusterUnreachable(
            f"your agent cannot be started: the cluster is unreachable ({exc.message})"
        )
    if exc.code == 403:
        return AgentRefused(f"your agent cannot be started: the platform may not {what} ({said})")
    if exc.code == 404:
        return AgentRefused(
            f"your agent cannot be started: the cluster has no place to {what} "
            f"(the agents' namespace or Knative Serving is missing; {said})"
        )
    if exc.code == 422:
        return AgentRefused(
            f"your agent cannot be started: the cluster refused to {what} as invalid ({said})"
        )
    if exc.code == 429 or exc.code >= 500:
        return AgentRefused(
            f"your agent cannot be started right now: the cluster is busy ({exc.code} {said}); "
            "try again shortly"
        )
    return AgentRefused(
        f"your agent cannot be started: the cluster refused to {what} ({exc.code} {said})"
    )


def ready_condition(svc: KService) -> Condition | None:
    """The Service's ``Ready`` condition, if its controller has seen its current spec."""
    generation, observed = svc.metadata.generation, svc.status.observed_generation
    if generation is not None and observed != generation:
        return None  # the status is about an older spec (just made, or updated)
    for condition in svc.status.conditions:
        if condition.type == "Ready":
            return condition
    return None


def mcp_url(svc: KService) -> str | None:
    """The agent's MCP address: the Service's cluster-local address (its public URL only
    if it has none)."""
    address = svc.status.address.url if svc.status.address else None
    url = address or svc.status.url
    return f"{url.rstrip('/')}/mcp" if url else None


def update_patch(current: KService, desired: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch making ``current`` the ``desired`` Service: its labels and spec,
    and the revision annotations it no longer has removed (a merge patch keeps what it
    does not name: a tier that stops idling must lose its retention period)."""
    spec = copy.deepcopy(desired["spec"])
    annotations = spec["template"]["metadata"]["annotations"]
    for key in current.spec.template.metadata.annotations:
        annotations.setdefault(key, None)
    return {"metadata": {"labels": desired["metadata"]["labels"]}, "spec": spec}


def _why(condition: Condition | None) -> str:
    if condition is None:
        return "Knative has not reported on it yet"
    return f"{condition.reason or condition.status}: {condition.message or 'no message'}"


@dataclass
class KnativeProvisioner:
    """Agents as Knative Services in ``knative.namespace``."""

    cfg: Settings
    cluster: Cluster | None = None
    #: who makes a person's Service (``agent:<user>``): Redis leases across replicas
    leases: Leases = field(default_factory=LocalLeases)
    _states: dict[str, AgentState] = field(default_factory=dict)
    _endpoints: dict[str, tuple[float, str, AgentEndpoint]] = field(default_factory=dict)
    _tokens_at: dict[str, float] = field(default_factory=dict)
    _renewer: asyncio.Task[None] | None = None
    #: the ids of a person's revoked tokens (the accounts database's), written beside the
    #: agent's tokens each time they are (the Secret is replaced whole, never read)
    revoked_ids: Callable[[str], set[str]] | None = None
    #: how often the agents' tokens are looked at (renewed at half their life)
    renew_every_s: float = 600.0
    stats: dict[str, int] = field(
        default_factory=lambda: {"created": 0, "updated": 0, "already_existed": 0}
    )

    def __post_init__(self) -> None:
        self.k = self.cfg.knative
        self._keys = token_keys(self.cfg)
        self.tiers = manifests.tiers_from(self.k, self.cfg.agent.idle_timeout_s)
        if self.cluster is None:
            self.cluster = Cluster(self.k)
        with contextlib.suppress(RuntimeError):  # no loop yet: started by the first ensure()
            asyncio.get_running_loop()
            self._renewer = asyncio.create_task(self._renew_tokens())

    @property
    def _api(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def state(self, user: str) -> AgentState:
        return self._states.get(user, "stopped")

    async def ensure(
        self, user: str, tier: str, on_starting: Callable[[], Awaitable[None]] | None = None
    ) -> AgentEndpoint:
        check_user_id(user)
        the_tier = self.tiers.get(tier)
        if the_tier is None:
            raise ProvisioningError(f"your agent cannot be started: unknown tier {tier!r}")
        # two messages at once (on this replica or two) make one Service
        async with agent_lease(self.leases, user):
            held = self._endpoints.get(user)
            if (
                held is not None
                and held[1] == tier
                and time.monotonic() - held[0] < ENDPOINT_REUSE_S
            ):
                return held[2]
            try:
                endpoint = await self._ensure(user, the_tier, on_starting)
            except ProvisioningError:
                self._states[user] = "crashed"
                raise
            self._states[user] = "running"
            self._endpoints[user] = (time.monotonic(), tier, endpoint)
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew_tokens())
            return endpoint

    async def _ensure(
        self,
        user: str,
        tier: manifests.Tier,
        on_starting: Callable[[], Awaitable[None]] | None,
    ) -> AgentEndpoint:
        started = time.monotonic()
        deadline = started + self.k.ready_timeout_s
        # the pod mounts both; neither needs the other
        await asyncio.gather(self._ensure_tokens(user), self._ensure_pvc(user, tier))
        svc = await self._ensure_service(user, tier, on_starting)
        svc = await self._wait_ready(svc, deadline)
        url = mcp_url(svc)
        if url is None:
            raise AgentNotReady(
                "your agent is ready but has no address yet; try again shortly", None
            )
        log.info(
            "agent ready",
            user=user,
            service=svc.metadata.name,
            seconds=round(time.monotonic() - started, 2),
        )
        return AgentEndpoint(user, url)

    # --- the objects ------------------------------------------------------------------

    async def _ensure_tokens(self, user: str) -> None:
        """The agent's own tokens, in its Secret: written when this gateway first serves the
        person, then renewed at half their life (the agent re-reads the file each use)."""
        at = self._tokens_at.get(user)
        if at is not None and time.monotonic() - at < TOKEN_TTL_S / 2:
            return
        revoked = await asyncio.to_thread(self.revoked_ids, user) if self.revoked_ids else set()
        await self._write_tokens(user, revoked)

    async def _write_tokens(self, user: str, revoked: set[str]) -> None:
        tokens = AgentTokens(
            service=mint_token(self._keys, user, "service", TOKEN_TTL_S),
            embedder=embedder_token(self._keys, user, TOKEN_TTL_S),
        )
        secret = manifests.agent_tokens_secret(
            user, tokens.model_dump_json(), namespace=self.k.namespace, revoked=revoked
        )
        try:
            await self._api.put_secret(secret)
        except ClusterError as exc:
            raise refusal(exc, "write your agent's tokens") from None
        self._tokens_at[user] = time.monotonic()

    async def _ensure_pvc(self, user: str, tier: manifests.Tier) -> None:
        name = manifests.pvc_name(user)
        try:
            await self._api.get_pvc(name)
            return
        except ClusterError as exc:
            if exc.code != 404:
                raise refusal(exc, "read your workspace volume") from None
        pvc = manifests.agent_pvc(
            user, tier, namespace=self.k.namespace, storage_class=self.k.storage_class
        )
        try:
            await self._api.create_pvc(pvc)
        except ClusterError as exc:
            if exc.code != 409:  # made meanwhile by another replica: as good
                raise refusal(exc, "create your workspace volume") from None

    async def _ensure_service(
        self,
        user: str,
        tier: manifests.Tier,
        on_starting: Callable[[], Awaitable[None]] | None,
    ) -> KService:
        name = manifests.service_name(user)
        desired = manifests.agent_service(
            user,
            tier,
            self.k.agent_image,
            namespace=self.k.namespace,
            config_map=self.k.agent_config_map,
            service_account=self.k.agent_service_account,
            runtime_class=self.k.agent_runtime_class,
        )
        try:
            svc = await self._api.get_service(name)
        except ClusterError as exc:
            if exc.code != 404:
                raise refusal(exc, "read your agent's service") from None
        else:
            if (
                svc.metadata.labels.get(manifests.LABEL_TIER) != tier.name
                or svc.image != self.k.agent_image
            ):
                # a new tier or a new agent image: a new revision
                self._states[user] = "starting"
                if on_starting is not None:
                    await on_starting()
                patch = update_patch(svc, desired)
                try:
                    svc = await self._api.patch_service(name, patch)
                except ClusterError as exc:
                    raise refusal(exc, "update your agent's service") from None
                self.stats["updated"] += 1
            return svc
        self._states[user] = "starting"
        if on_starting is not None:
            await on_starting()
        try:
            svc = await self._api.create_service(desired)
            self.stats["created"] += 1
            log.info("agent service created", user=user, service=name, tier=tier.name)
            return svc
        except ClusterError as exc:
            if exc.code != 409:
                raise refusal(exc, "create your agent's service") from None
        self.stats["already_existed"] += 1  # another replica made it first
        try:
            return await self._api.get_service(name)
        except ClusterError as exc:
            raise refusal(exc, "read your agent's service") from None

    async def _wait_ready(self, svc: KService, deadline: float) -> KService:
        """``svc`` once Ready (a watch on it, started again after a break with backoff)."""
        name, last, backoff = svc.metadata.name, svc, 0.05
        while True:
            condition = ready_condition(last)
            if condition is not None and condition.status == "True":
                return last
            if condition is not None and condition.status == "False":
                raise AgentNotReady(
                    f"your agent could not start: {_why(condition)}", condition.reason
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentNotReady(
                    f"your agent did not start within {self.k.ready_timeout_s:g}s "
                    f"({_why(condition)}); try again shortly",
                    condition.reason if condition else None,
                )
            try:
                async with (
                    asyncio.timeout(remaining),
                    contextlib.aclosing(self._watch(name, last, remaining)) as changes,
                ):
                    async for kind, seen in changes:
                        if kind == "DELETED":
                            raise AgentNotReady(
                                "your agent was removed while it started; try again", None
                            )
                        last = seen
                        condition = ready_condition(last)
                        if condition is not None and condition.status != "Unknown":
                            break
            except TimeoutError:
                continue  # the deadline: reported above with the last condition
            except ClusterError as exc:
                if exc.code not in (0, 410, 429) and exc.code < 500:
                    raise refusal(exc, "watch your agent's service") from None
                log.info("agent watch broken; starting again", service=name, code=exc.code)
            if condition is not None and condition.status != "Unknown":
                continue
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, 2.0)
            try:
                last = await self._api.get_service(name)
            except ClusterError as exc:
                raise refusal(exc, "read your agent's service") from None

    def _watch(
        self, name: str, last: KService, remaining: float
    ) -> AsyncGenerator[tuple[str, KService], None]:
        return self._api.watch_service(name, last.metadata.resource_version, remaining)

    async def _renew_tokens(self) -> None:
        """Keep agents' tokens fresh: those of people served here, and of every agent that
        never sleeps (a tier with no idle time), served here or not (this gateway may have
        started after their last message)."""
        while True:
            await self.renew_tokens()
            await asyncio.sleep(self.renew_every_s)

    async def renew_tokens(self) -> None:
        """One round of :meth:`_renew_tokens` (each agent's Secret at half its tokens' life)."""
        users = set(self._tokens_at)
        for tier in (t for t in self.tiers.values() if t.idle_s is None):
            selector = f"{manifests.AGENT_SELECTOR},{manifests.LABEL_TIER}={tier.name}"
            try:
                services = await self._api.list_services(selector)
            except ClusterError as exc:
                log.warning("always-up agents not listed", tier=tier.name, error=str(exc))
                continue
            for svc in services:
                user = svc.metadata.annotations.get(manifests.ANNOTATION_USER, "")
                try:
                    if svc.metadata.name == manifests.service_name(user):
                        users.add(user)
                except ValueError:
                    continue  # not a person's agent as the template makes them
        for user in sorted(users):
            try:
                await self._ensure_tokens(user)
            except ProvisioningError as exc:
                log.warning("agent tokens not renewed", user=user, error=str(exc))

    # --- the rest of the interface ----------------------------------------------------

    async def stop(self, user: str) -> None:
        """Knative scales an idle agent to zero; here only what is held is let go."""
        self._endpoints.pop(user, None)
        self._states[user] = "stopped"

    async def revoke_tokens(self, user: str, token_ids: set[str]) -> None:
        """Write ``token_ids`` beside the agent's tokens (its Secret, fresh tokens with them):
        the agent refuses them once the kubelet has brought the change (within a minute);
        the gateway, the only door to agents, refuses them at once (``authenticate``)."""
        await self._write_tokens(check_user_id(user), token_ids)

    async def delete(self, user: str) -> None:
        """Forget the person here; the lifecycle sweeper removes their Service, PVC and
        token Secret once their account is gone (the gateway may not delete agents)."""
        await self.stop(user)
        self._tokens_at.pop(user, None)
        self._states.pop(user, None)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._api.close()
