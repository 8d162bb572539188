"""The local provisioner: agents started on demand, idle exits, crashes, the ready timeout."""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dexorder.config import Settings
from dexorder.contracts.agent_tools import GET_WATCHLIST
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


async def call(
    p: LocalProvisioner,
    user: str,
    tool: str = "get_watchlist",
    args: dict[str, object] | None = None,
) -> object:
    """A call as the gateway's callers make it: the agent's address from ``ensure`` (which
    starts it again if it is in the middle of an idle exit), then the call."""
    endpoint = await p.ensure(user, "free")
    token = mint_token(token_keys(p.cfg), user)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(endpoint.mcp_url, http_client=http)) as c,
    ):
        return await c.call_tool(tool, args or {})


def refused(port: int) -> bool:
    """Whether nothing listens on ``port`` any more (blocking: the loop does not run)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


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
    # no timing assumed: on a loaded machine the agent may idle out (2 s here) before this
    # call, which then gets a fresh agent from ensure()
    assert not (await call(provisioner, "alice")).is_error  # type: ignore[attr-defined]

    await until(lambda: provisioner.state("alice") == "idle")  # free tier: 2 s idle here
    stats = dict(provisioner.stats)
    assert stats["idle_exits"] == stats["started"] and stats["crashes"] == 0  # all idle

    await provisioner.ensure("alice", "free", told)
    assert provisioner.stats["started"] == stats["started"] + 1 and len(starting) == 2
    assert not (await call(provisioner, "alice")).is_error  # type: ignore[attr-defined]


async def test_a_call_that_races_an_idle_exit_is_served_by_a_fresh_agent(
    provisioner: LocalProvisioner,
) -> None:
    """The agent stops listening the moment it decides it is idle; a call on its way then
    (the provisioner still believes the agent runs: its loop has not run since) must not
    fail: ensure() waits for the exit and starts the agent again; the call runs once."""
    await provisioner.ensure("erin", "free")
    agent = provisioner._agents["erin"]
    # blocking on purpose: the provisioner cannot see the exit while the agent leaves
    deadline = time.monotonic() + 60
    while not refused(agent.port):
        assert time.monotonic() < deadline, "the agent did not exit idle"
        time.sleep(0.01)  # polling a condition of another process, not synchronising
    assert provisioner.state("erin") == "running"  # believed running: the race
    # the fresh agent stays (no second idle exit on a slow machine spoils the count)
    provisioner.env["DEXORDER_AGENT__IDLE_TIMEOUT_S"] = json.dumps({"free": 3600})

    tickers = ["BINANCE:ETH/USDT"]
    result = await call(provisioner, "erin", "set_watchlist", {"tickers": tickers})
    assert not result.is_error, result  # type: ignore[attr-defined]
    assert provisioner.stats == {"started": 2, "idle_exits": 1, "crashes": 0}
    assert provisioner._agents["erin"] is not agent and agent.proc.returncode == 42
    assert provisioner.state("erin") == "running"
    listed = await call(provisioner, "erin")
    assert GET_WATCHLIST.parse(listed.structured_content).watchlist == tickers  # type: ignore[attr-defined]


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
