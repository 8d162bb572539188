"""The gateway with ``gateway.provisioner: knative``: a chat turn through the Knative
provisioner and the loopback API server, with a real agent process standing in for the pod
behind a request-counting proxy (Knative's queue-proxy counts open requests the same way:
an agent with an open request never scales to zero)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dexorder.config import KnativeConfig, Settings
from dexorder.contracts.chat import ServerFrame
from dexorder.process import free_port
from dexorder.tokens import new_keys
from gateway.knative import manifests as m
from gateway.knative.provisioner import KnativeProvisioner
from gateway.provisioning import LocalProvisioner
from gateway.service import Caller, Gateway, Refused
from tests.gateway.loopback_kubernetes import LoopbackKubernetes

pytestmark = pytest.mark.integration

_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


@dataclass
class CountingProxy:
    """A reverse proxy to ``upstream`` counting the requests open through it."""

    upstream: str
    in_flight: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        self.in_flight += 1
        self.seen.append((request.method, request.path))
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
            async with self._http.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=await request.read(),
            ) as up:
                out = web.StreamResponse(
                    status=up.status,
                    headers={k: v for k, v in up.headers.items() if k.lower() not in _HOP},
                )
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()


@pytest.fixture
async def knative_gateway(
    tmp_path: Path,
) -> AsyncIterator[tuple[Gateway, list[CountingProxy], LoopbackKubernetes]]:
    """A gateway on the loopback cluster; the list holds each pod's proxy as pods start."""
    token_file = tmp_path / "sa-token"
    api = LoopbackKubernetes(ready_after_s=0.0)
    await api.start()
    token_file.write_text(api.token)
    cfg = Settings(
        home=tmp_path / "home",
        embedder={"enabled": False},
        agent={"token_private_key": new_keys().private_pem},
        gateway={"provisioner": "knative", "port": free_port(), "events_port": free_port()},
        knative=KnativeConfig(
            api_server=api.url,
            token_file=str(token_file),
            ca_file=None,
            session_linger_s=0.5,
            ready_timeout_s=60,
        ),
    )
    pods = LocalProvisioner(cfg, env={"DEXORDER_EMBEDDER__ENABLED": "false"})
    proxies: list[CountingProxy] = []

    async def pod(service: dict[str, Any]) -> str:
        """The pod: the person's agent, behind a counting proxy."""
        user = service["metadata"]["annotations"][m.ANNOTATION_USER]
        tier = service["metadata"]["labels"][m.LABEL_TIER]
        endpoint = await pods.ensure(user, tier)
        proxy = CountingProxy(endpoint.mcp_url.removesuffix("/mcp"))
        proxies.append(proxy)
        return await proxy.start()

    api.pod = pod
    gw = Gateway.build(cfg)
    assert isinstance(gw.provisioner, KnativeProvisioner)
    await gw.start(events=False)
    try:
        yield gw, proxies, api
    finally:
        await gw.close()
        for proxy in proxies:
            await proxy.close()
        await pods.close()
        await api.close()


async def test_a_turn_through_knative_leaves_no_open_request_to_the_agent(
    knative_gateway: tuple[Gateway, list[CountingProxy], LoopbackKubernetes],
) -> None:
    gw, proxies, _ = knative_gateway
    account = gw.accounts.get(gw.cfg.gateway.local_user)
    frames: list[ServerFrame] = []

    async def send(frame: ServerFrame) -> None:
        frames.append(frame)

    result = await gw.chat(Caller(account, "session"), "list my strategies", "web", send)
    assert "sma_cross" in result.reply
    assert any(getattr(f, "text", "") == "Starting your agent…" for f in frames)
    (proxy,) = proxies
    # between turns no request to the agent stays open (mcp 2.x speaks the modern protocol:
    # no standalone GET stream; an older agent would get one, which the linger closes)
    assert proxy.in_flight == 0 and ("GET", "/mcp") not in proxy.seen
    assert gw.harness.links.linger_s == 0.5
    async with asyncio.timeout(10):  # the session itself is let go after the linger
        while gw.harness.links._held:
            await asyncio.sleep(0.05)
    # a second turn opens a fresh session on the same Service, no new one made
    result = await gw.chat(Caller(account, "session"), "show my positions", "web", send)
    assert "Cash" in result.reply
    assert len(proxies) == 1 and proxy.seen.count(("POST", "/mcp")) > 2


async def test_a_refusal_of_the_cluster_reaches_the_person_as_a_clear_503(
    knative_gateway: tuple[Gateway, list[CountingProxy], LoopbackKubernetes],
) -> None:
    gw, proxies, api = knative_gateway
    api.forbidden.add(("create", "services"))
    account = gw.accounts.get(gw.cfg.gateway.local_user)

    async def send(frame: ServerFrame) -> None:
        pass

    with pytest.raises(Refused) as caught:
        await gw.chat(Caller(account, "session"), "list my strategies", "web", send)
    assert caught.value.status == 503
    assert "the platform may not create your agent's service (Forbidden:" in caught.value.message
    assert proxies == []
