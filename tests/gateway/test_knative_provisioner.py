"""The Knative provisioner against a loopback Kubernetes API server: the real ``kubernetes``
client and httpx make the calls, the server answers as the API server and Knative would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dexorder.config import KnativeConfig, Settings
from dexorder.tokens import AgentTokens, new_keys, verify_token
from gateway.knative import manifests as m
from gateway.knative.api import Cluster
from gateway.knative.provisioner import AgentNotReady, AgentRefused, KnativeProvisioner
from gateway.provisioning import ProvisioningError
from tests.gateway.loopback_kubernetes import LoopbackKubernetes

USER = "u_alice"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[LoopbackKubernetes]:
    server = LoopbackKubernetes(ready_after_s=0.05)
    await server.start()
    yield server
    await server.close()


def settings(tmp_path: Path, api: LoopbackKubernetes, **knative: object) -> Settings:
    token = tmp_path / "sa-token"
    token.write_text(api.token + "\n")
    keys = new_keys()
    return Settings(
        home=tmp_path / "home",
        agent={"token_private_key": keys.private_pem},
        gateway={"provisioner": "knative"},
        knative=KnativeConfig(
            api_server=api.url,
            token_file=str(token),
            ca_file=None,
            agent_image="registry.example/agent:1",
            **knative,
        ),
    )


@pytest.fixture
async def provisioner(tmp_path: Path, api: LoopbackKubernetes) -> AsyncIterator[KnativeProvisioner]:
    p = KnativeProvisioner(settings(tmp_path, api, ready_timeout_s=10))
    yield p
    await p.close()


async def test_ensure_makes_the_objects_waits_for_ready_and_returns_the_cluster_local_address(
    provisioner: KnativeProvisioner, api: LoopbackKubernetes
) -> None:
    said: list[str] = []

    async def starting() -> None:
        said.append("starting")

    endpoint = await provisioner.ensure(USER, "pro", on_starting=starting)
    name = m.service_name(USER)
    assert endpoint.mcp_url == f"http://{name}.dexorder-agents.svc.cluster.local/mcp"
    assert said == ["starting"]
    assert provisioner.state(USER) == "running"
    svc = api.get("services", name)
    assert svc is not None
    made = m.agent_service(USER, m.DEFAULT_TIERS["pro"], "registry.example/agent:1")
    assert svc["spec"]["template"]["spec"] == made["spec"]["template"]["spec"]
    assert svc["metadata"]["labels"] == made["metadata"]["labels"]
    assert svc["metadata"]["annotations"][m.ANNOTATION_USER] == USER
    pvc = api.get("persistentvolumeclaims", m.pvc_name(USER))
    assert pvc is not None and pvc["spec"]["resources"]["requests"] == {"storage": "10Gi"}
    secret = api.get("secrets", m.tokens_secret_name(USER))
    assert secret is not None
    tokens = AgentTokens.model_validate_json(secret["data"][m.TOKENS_KEY])
    assert verify_token(provisioner._keys, tokens.service).user == USER  # its own person's
    assert "PRIVATE KEY" not in json.dumps(svc) + json.dumps(secret)
    # a second message: nothing is made again, and no starting notice
    said.clear()
    again = await provisioner.ensure(USER, "pro", on_starting=starting)
    assert again == endpoint and said == []
    assert api.created == {"secrets": 1, "persistentvolumeclaims": 1, "services": 1}


async def test_concurrent_first_messages_make_one_service(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    """Ten messages at once on one gateway, and two gateway replicas racing (one gets 409
    AlreadyExists and takes the other's Service)."""
    cfg = settings(tmp_path, api, ready_timeout_s=10)
    one, two = KnativeProvisioner(cfg), KnativeProvisioner(cfg)
    try:
        results = await asyncio.gather(
            *(one.ensure(USER, "free") for _ in range(10)),
            *(two.ensure(USER, "free") for _ in range(10)),
        )
    finally:
        await one.close()
        await two.close()
    assert len({r.mcp_url for r in results}) == 1
    assert api.created["services"] == 1 and api.created["persistentvolumeclaims"] == 1
    creates = [r for r in api.requests if r[0] == "POST" and r[1].endswith("/services")]
    assert 1 <= len(creates) <= 2  # at most one per replica: the lock holds within one


async def test_a_service_made_by_another_party_is_taken_as_it_is(
    provisioner: KnativeProvisioner, api: LoopbackKubernetes
) -> None:
    first = await provisioner.ensure(USER, "free")
    provisioner._endpoints.clear()
    second = await provisioner.ensure(USER, "free")
    assert first == second and api.created["services"] == 1


async def test_a_new_tier_makes_a_new_revision(
    provisioner: KnativeProvisioner, api: LoopbackKubernetes
) -> None:
    await provisioner.ensure(USER, "free")
    await provisioner.ensure(USER, "enterprise")
    svc = api.get("services", m.service_name(USER))
    assert svc is not None and svc["metadata"]["generation"] == 2
    assert svc["spec"]["template"]["metadata"]["annotations"][m.MIN_SCALE] == "1"
    assert m.RETENTION not in svc["spec"]["template"]["metadata"]["annotations"]
    assert provisioner.stats["updated"] == 1


@pytest.mark.parametrize(
    ("verb", "plural", "said"),
    [
        (
            "create",
            "services",
            "may not create your agent's service "
            "(Forbidden: services.serving.knative.dev is forbidden",
        ),
        ("get", "persistentvolumeclaims", "may not read your workspace volume (Forbidden:"),
        ("create", "secrets", "may not write your agent's tokens (Forbidden:"),
    ],
)
async def test_403_is_a_clear_refusal(
    provisioner: KnativeProvisioner, api: LoopbackKubernetes, verb: str, plural: str, said: str
) -> None:
    api.forbidden.add((verb, plural))
    with pytest.raises(AgentRefused) as caught:
        await provisioner.ensure(USER, "free")
    assert said in str(caught.value)
    assert caught.value.status == 503
    assert provisioner.state(USER) == "crashed"


async def test_404_when_the_namespace_is_missing(tmp_path: Path, api: LoopbackKubernetes) -> None:
    p = KnativeProvisioner(settings(tmp_path, api, namespace="no-such-namespace"))
    try:
        with pytest.raises(
            AgentRefused,
            match="namespace or Knative Serving is missing; "
            'NotFound: namespaces "no-such-namespace" not found',
        ):
            await p.ensure(USER, "free")
    finally:
        await p.close()


async def test_422_carries_the_status_message(tmp_path: Path, api: LoopbackKubernetes) -> None:
    """A Service Knative's webhook refuses (here: an image of the wrong type is impossible
    through the typed template, so a retention above Knative's hour, set around it)."""
    cfg = settings(tmp_path, api)
    p = KnativeProvisioner(cfg)
    p.tiers["free"] = m.Tier.model_construct(
        **{**m.DEFAULT_TIERS["free"].model_dump(), "idle_s": 7200}
    )
    try:
        with pytest.raises(AgentRefused) as caught:
            await p.ensure(USER, "free")
    finally:
        await p.close()
    assert (
        "refused to create your agent's service as invalid (Invalid: Service.serving.knative.dev"
        in str(caught.value)
    )
    assert "scale-to-zero-pod-retention-period: expected 0s <= 120m <= 1h0m0s" in str(caught.value)


async def test_never_ready_times_out_with_the_reason(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    api.never_ready[m.service_name(USER)] = ("Unknown", "RevisionMissing", "")
    p = KnativeProvisioner(settings(tmp_path, api, ready_timeout_s=0.6))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(AgentNotReady) as caught:
            await p.ensure(USER, "free")
    finally:
        await p.close()
    assert 0.6 <= loop.time() - started < 5
    assert caught.value.reason == "RevisionMissing"
    assert "did not start within 0.6s (RevisionMissing: Configuration" in str(caught.value)


async def test_a_failed_revision_is_reported_at_once(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    message = (
        'Revision "x-00001" failed with message: 0/3 nodes are available: 3 Insufficient memory.'
    )
    api.never_ready[m.service_name(USER)] = ("False", "RevisionFailed", message)
    p = KnativeProvisioner(settings(tmp_path, api, ready_timeout_s=30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(AgentNotReady, match="could not start: RevisionFailed: Revision"):
            await p.ensure(USER, "free")
    finally:
        await p.close()
    assert loop.time() - started < 5


async def test_a_broken_watch_is_started_again(tmp_path: Path, api: LoopbackKubernetes) -> None:
    """410 Gone (the resource version was compacted away): the provisioner reads the Service
    again and watches on."""
    api.compacted_below = 10**9
    api.ready_after_s = 0.3
    p = KnativeProvisioner(settings(tmp_path, api, ready_timeout_s=10))
    try:
        endpoint = await p.ensure(USER, "free")
    finally:
        await p.close()
    assert endpoint.mcp_url.endswith("/mcp")
    gets = [r for r in api.requests if r[0] == "GET" and r[1].endswith(m.service_name(USER))]
    assert len(gets) >= 2


async def test_an_unreachable_api_server_is_a_clear_error(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    cfg = settings(tmp_path, api)
    await api.close()
    p = KnativeProvisioner(cfg)
    try:
        with pytest.raises(ProvisioningError, match="the cluster is unreachable"):
            await p.ensure(USER, "free")
    finally:
        await p.close()


async def test_a_wrong_token_is_refused_by_the_server(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    cfg = settings(tmp_path, api)
    Path(cfg.knative.token_file).write_text("not-the-token")
    cluster = Cluster(cfg.knative)
    p = KnativeProvisioner(cfg, cluster)
    try:
        with pytest.raises(AgentRefused, match="401 Unauthorized"):
            await p.ensure(USER, "free")
    finally:
        await p.close()


async def test_an_answer_that_is_not_a_service_is_a_clear_error(
    provisioner: KnativeProvisioner, api: LoopbackKubernetes
) -> None:
    """What the API server says is validated: a Service whose status makes no sense is
    refused with a message, not a crash."""
    broken = m.agent_service(USER, m.DEFAULT_TIERS["free"], "registry.example/agent:1")
    broken["status"] = {"conditions": [{"type": "Ready", "status": "Maybe"}]}
    api.put("services", broken)
    with pytest.raises(AgentRefused, match="502 BadResponse: unexpected answer"):
        await provisioner.ensure(USER, "free")


async def test_the_agents_tokens_are_renewed_at_half_their_life(
    provisioner: KnativeProvisioner, api: LoopbackKubernetes
) -> None:
    """The Secret exists (409 on create), so it is replaced whole, never read."""
    from gateway.provisioning import TOKEN_TTL_S

    await provisioner.ensure(USER, "free")
    secret = api.get("secrets", m.tokens_secret_name(USER))
    assert secret is not None
    before = secret["data"][m.TOKENS_KEY]
    provisioner._tokens_at[USER] -= TOKEN_TTL_S / 2 + 1
    provisioner._endpoints.clear()
    await provisioner.ensure(USER, "free")
    after = api.get("secrets", m.tokens_secret_name(USER))
    assert after is not None and after["data"][m.TOKENS_KEY] != before
    assert (
        "PUT",
        f"/api/v1/namespaces/dexorder-agents/secrets/{m.tokens_secret_name(USER)}",
    ) in api.requests
    assert not any(r[0] == "GET" and "/secrets" in r[1] for r in api.requests)


def test_outside_a_cluster_the_api_server_must_be_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dexorder.config import ConfigError

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match=r"knative\.api_server is not set"):
        Cluster(KnativeConfig())


async def test_agents_that_never_sleep_get_fresh_tokens_from_a_gateway_that_just_started(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    """An enterprise agent runs on while gateways come and go: a new gateway renews its
    tokens without waiting for the person's next message; a sleeping tier's agent gets
    them at its next message, and an object not made by the template gets none."""
    for user, tier in [("ent", "enterprise"), ("sleepy", "free")]:
        api.put("services", m.agent_service(user, m.DEFAULT_TIERS[tier], "img"))
    odd = m.agent_service("odd", m.DEFAULT_TIERS["enterprise"], "img")
    odd["metadata"]["name"] = "not-an-agent-name"
    api.put("services", odd)
    p = KnativeProvisioner(settings(tmp_path, api))
    try:
        async with asyncio.timeout(10):
            while api.get("secrets", m.tokens_secret_name("ent")) is None:
                await asyncio.sleep(0.02)
        await p.renew_tokens()  # a second round: everything it would do is done
    finally:
        await p.close()
    assert api.get("secrets", m.tokens_secret_name("sleepy")) is None
    assert api.get("secrets", m.tokens_secret_name("odd")) is None


async def test_revoked_tokens_go_beside_the_agents_tokens_and_stay_through_renewals(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    """On Knative the agent reads the ids of its person's revoked tokens from its token
    Secret: revoking writes them (with fresh tokens: the Secret is replaced whole, never
    read), and a renewal writes them again from the accounts database."""
    from gateway.provisioning import TOKEN_TTL_S

    revoked = {"old-pat"}
    p = KnativeProvisioner(
        settings(tmp_path, api, ready_timeout_s=10), revoked_ids=lambda user: set(revoked)
    )
    try:
        await p.ensure(USER, "free")

        def in_secret() -> tuple[str, AgentTokens]:
            secret = api.get("secrets", m.tokens_secret_name(USER))
            assert secret is not None
            data = secret["data"]
            return data[m.REVOKED_KEY], AgentTokens.model_validate_json(data[m.TOKENS_KEY])

        assert in_secret()[0] == "old-pat\n"
        revoked.add("claude-desktop")
        await p.revoke_tokens(USER, set(revoked))
        ids, tokens = in_secret()
        assert ids == "claude-desktop\nold-pat\n"
        assert verify_token(p._keys, tokens.service).user == USER  # still its tokens
        p._tokens_at[USER] -= TOKEN_TTL_S / 2 + 1
        p._endpoints.clear()
        await p.ensure(USER, "free")  # renewed: the ids are written again
        assert in_secret()[0] == "claude-desktop\nold-pat\n"
        assert not any(r[0] == "GET" and "/secrets" in r[1] for r in api.requests)
    finally:
        await p.close()
