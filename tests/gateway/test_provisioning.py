"""The local provisioner: agents started on demand, idle exits, crashes, the ready timeout."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dexorder.config import Settings
from dexorder.tokens import InvalidUserId, mint_token, token_keys
from gateway.provisioning import LocalProvisioner, ProvisioningError

pytestmark = pytest.mark.integration


@pytest.fixture
async def provisioner(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = LocalProvisioner(
        Settings(home=tmp_path / "home"),
        env={
            "DEXORDER_AGENT__IDLE_TIMEOUT_S": json.dumps(
                {"free": 2, "pro": 3600, "enterprise": None}
            )
        },
    )
    yield p
    await p.close()


async def call(p: LocalProvisioner, url: str, user: str) -> object:
    token = mint_token(token_keys(p.cfg), user)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http)) as c,
    ):
        return await c.call_tool("get_watchlist", {})


async def until(check, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_an_agent_starts_on_demand_once_and_again_after_going_idle(
    provisioner: LocalProvisioner,
) -> None:
    starting: list[str] = []

    async def told() -> None:
        starting.append("your agent is starting")

    endpoints = await asyncio.gather(*(provisioner.ensure("alice", "free", told) for _ in range(3)))
    assert {e.mcp_url for e in endpoints} == {endpoints[0].mcp_url}
    assert provisioner.stats["started"] == 1 and starting == ["your agent is starting"]
    assert provisioner.state("alice") == "running"
    result = await call(provisioner, endpoints[0].mcp_url, "alice")
    assert not result.is_error  # type: ignore[attr-defined]

    await until(lambda: provisioner.state("alice") == "idle")  # free tier: 2 s idle here
    assert provisioner.stats["idle_exits"] == 1 and provisioner.stats["crashes"] == 0

    again = await provisioner.ensure("alice", "free", told)
    assert provisioner.stats["started"] == 2 and len(starting) == 2
    assert not (await call(provisioner, again.mcp_url, "alice")).is_error  # type: ignore[attr-defined]


async def test_a_crashed_agent_is_started_again(provisioner: LocalProvisioner) -> None:
    first = await provisioner.ensure("bob", "pro")
    agent = provisioner._agents["bob"]
    agent.proc.send_signal(signal.SIGKILL)
    await until(lambda: provisioner.state("bob") == "crashed")
    second = await provisioner.ensure("bob", "pro")
    assert second.mcp_url != first.mcp_url and provisioner.state("bob") == "running"
    assert provisioner.stats == {"started": 2, "idle_exits": 0, "crashes": 1}


async def test_the_ready_timeout_and_bad_ids(tmp_path: Path) -> None:
    slow = LocalProvisioner(Settings(home=tmp_path / "home"), ready_timeout_s=0.05)
    try:
        with pytest.raises(ProvisioningError, match=r"did not start within 0\.05s"):
            await slow.ensure("carol", "free")
        assert slow.state("carol") == "stopped"
        with pytest.raises(InvalidUserId):
            await slow.ensure("../dave", "free")
    finally:
        await slow.close()
