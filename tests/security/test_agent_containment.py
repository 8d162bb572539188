"""Threat: a person's agent process (or whatever took it over: the person's code out of its
sandbox) reads the platform's secrets or another person's folder, outlives the gateway,
runs twice for one person, or is lost with the person's orders.

On one machine each agent runs in its own namespaces (bubblewrap): it sees its person's
folder, the code and the lake, not ``state/`` (the token private key, the session
secret) and not other people's folders; it is given tokens instead of the key that
makes them. It dies with its gateway, holds a lock on its person's folder for its life,
and a crashed agent that watches orders is started again without waiting for a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dexorder.config import Settings
from dexorder.process import (
    AGENT_LOCKED_EXIT_CODE,
    active_triggers,
    agent_lock_file,
    free_port,
    lock_holders,
    pid_alive,
    process_args,
)
from dexorder.tokens import mint_token, token_keys
from gateway.provisioning import LocalProvisioner, ProvisioningError
from tests.gateway.served import gateway_settings, serve_gateway

pytestmark = pytest.mark.integration

ORDER = {
    "ticker": "BINANCE:BTC/USDT",
    "side": "buy",
    "quantity": 0.01,
    "order_type": "limit",
    "limit_price": 100.0,  # far below the market: it rests
}


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def call(home: Path, url: str, user: str, tool: str, args: dict[str, Any]) -> Any:
    token = mint_token(token_keys(Settings(home=home)), user)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as c,
    ):
        result = await c.call_tool(tool, args)
        assert not result.is_error, result
        return result.structured_content


def agent_pid(home: Path, user: str) -> int | None:
    holders = lock_holders(agent_lock_file(home / "agents" / user))
    return holders[0] if holders else None


def agent_url(pid: int) -> str:
    args = process_args(pid)
    return f"http://127.0.0.1:{args[args.index('--port') + 1]}/mcp"


@pytest.fixture
async def provisioner(tmp_path: Path) -> AsyncIterator[LocalProvisioner]:
    p = LocalProvisioner(Settings(home=tmp_path / "home", embedder={"enabled": False}))
    yield p
    await p.close()


async def test_an_agent_sees_neither_the_platform_secrets_nor_other_people(
    provisioner: LocalProvisioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stops an agent (or code that escaped into it) from reading the token private key or
    the session secret, and so becoming every person and the platform; and from reading
    or writing another person's folder (their system prompt, their orders)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-the-gateways-own")
    home = Path(provisioner.cfg.home)
    secrets = [
        home / "state" / "agent_token_ed25519.pem",
        home / "state" / "gateway_session_secret",
    ]
    token_keys(provisioner.cfg)  # the key file, made on first use
    secrets[1].write_text("the session secret")
    bob = home / "agents" / "bob" / "workspace" / "instructions.md"
    bob.parent.mkdir(parents=True)
    bob.write_text("bob's system prompt")
    for path in [*secrets, bob]:
        assert path.is_file()

    await provisioner.ensure("alice", "free")
    pid = agent_pid(home, "alice")
    assert pid is not None
    seen = Path(f"/proc/{pid}/root")  # the file system as the agent process sees it
    for path in [*secrets, bob, home / "secrets.yaml"]:
        assert not (seen / path.relative_to("/")).exists(), path
    assert (seen / (home / "agents" / "alice" / "agent.lock").relative_to("/")).exists()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"sk-the-gateways-own" not in environ
    config = (home / "run" / "agents" / "alice" / "config.yaml").read_text()
    assert "PRIVATE KEY" not in config and "PUBLIC KEY" in config
    # and it still works: tokens handed to it, its own folder writable
    url = agent_url(pid)
    placed = await call(home, url, "alice", "execute_trade", ORDER)
    assert placed["order"]["status"] == "open"


async def test_agents_are_refused_where_they_cannot_be_isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stops a host without bubblewrap from silently running agents that can read every
    secret; the operator must opt out in configuration, knowingly."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap here
    p = LocalProvisioner(Settings(home=tmp_path / "home", embedder={"enabled": False}))
    try:
        with pytest.raises(ProvisioningError, match=r"bubblewrap.*process_isolation: none"):
            await p.ensure("alice", "free")
    finally:
        await p.close()


async def test_a_second_agent_for_the_same_person_refuses_to_start(
    provisioner: LocalProvisioner,
) -> None:
    """Stops two agents of one person from writing the same paper book (an order placed
    through one is lost when the other saves)."""
    home = Path(provisioner.cfg.home)
    await provisioner.ensure("alice", "free")
    second = subprocess.Popen(
        [sys.executable, "-m", "agent", "--user", "alice", "--port", str(free_port())],
        env={**os.environ, "DEXORDER_HOME": str(home), "DEXORDER_EMBEDDER__ENABLED": "false"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = second.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        second.kill()
        second.wait()
        pytest.fail("a second agent of alice kept running")
    assert second.returncode == AGENT_LOCKED_EXIT_CODE
    assert b"another agent of alice is already running" in err


async def test_a_crashed_agent_with_an_open_order_is_started_again_without_a_message(
    provisioner: LocalProvisioner,
) -> None:
    """Stops a crash from silently ending the watch over a person's resting orders until
    they happen to write again."""
    home = Path(provisioner.cfg.home)
    endpoint = await provisioner.ensure("alice", "pro")
    placed = await call(home, endpoint.mcp_url, "alice", "execute_trade", ORDER)
    await until(lambda: active_triggers(home / "agents" / "alice") == 1)
    first = agent_pid(home, "alice")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await until(lambda: provisioner.state("alice") == "crashed")

    def restarted() -> bool:
        pid = agent_pid(home, "alice")
        return provisioner.state("alice") == "running" and pid not in (None, first)

    await until(restarted, timeout=60)
    pid = agent_pid(home, "alice")
    assert pid is not None
    positions = await call(home, agent_url(pid), "alice", "get_positions", {})
    assert placed["order"]["id"] in json.dumps(positions)


async def test_deleting_an_account_stops_its_agent_first(tmp_path: Path) -> None:
    """Stops an agent the gateway did not start itself (an earlier gateway's, one run by
    hand) from writing on into a deleted person's folder, or living on after them."""
    cfg = gateway_settings(tmp_path / "home")
    async with serve_gateway(cfg) as served:
        alice = await served.sign_up("alice@example.com")
        user = alice["account"]["id"]
        home = Path(cfg.home)
        stray = subprocess.Popen(
            [sys.executable, "-m", "agent", "--user", user, "--port", str(free_port())],
            env={**os.environ, "DEXORDER_HOME": str(home), "DEXORDER_EMBEDDER__ENABLED": "false"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await until(lambda: agent_pid(home, user) == stray.pid, timeout=60)
            status, _ = await served.delete("/api/me", token=alice["access_token"])
            assert status == 200
            assert stray.poll() is not None, "the agent outlived its account"
            assert not (home / "agents" / user).exists()
        finally:
            if stray.poll() is None:
                stray.kill()
            stray.wait()


# --- the gateway killed -------------------------------------------------------------------


def _gateway_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DEXORDER_HOME": str(home),
        "DEXORDER_EMBEDDER__ENABLED": "false",
        "DEXORDER_GATEWAY__PORT": str(free_port()),
        "DEXORDER_GATEWAY__EVENTS_PORT": str(free_port()),
    }


@contextlib.asynccontextmanager
async def gateway_process(
    env: dict[str, str],
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m gateway`` as its own process (so it can be killed), and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{env['DEXORDER_GATEWAY__PORT']}"
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):
                while True:
                    assert proc.poll() is None, "the gateway exited while starting"
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url + "/healthz") as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


async def chat_once(url: str, home: Path) -> None:
    """One chat turn as the machine's local person: their agent is started for it."""
    token = mint_token(token_keys(Settings(home=home)), "local", "service", 600)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url.replace("http", "ws") + "/api/chat/ws") as ws,
    ):
        await ws.send_str(json.dumps({"type": "auth", "token": token}))
        await ws.send_str(json.dumps({"type": "message", "text": "list my strategies"}))
        async with asyncio.timeout(120):
            while True:
                frame = json.loads((await ws.receive()).data)
                if frame["type"] in ("reply", "error"):
                    assert frame["type"] == "reply", frame
                    return


async def test_a_killed_gateway_leaves_no_agent_and_loses_no_order(tmp_path: Path) -> None:
    """Stops agents from living on, unsupervised and still holding their person's book,
    after their gateway is killed; and a new gateway's agent from starting over an old
    one (two writers of one book) or without the person's resting order."""
    home = tmp_path / "home"
    async with gateway_process(_gateway_env(home)) as (gateway, url):
        await chat_once(url, home)
        old = agent_pid(home, "local")
        assert old is not None
        placed = await call(home, agent_url(old), "local", "execute_trade", ORDER)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
        await until(lambda: not pid_alive(old), timeout=20)

    async with gateway_process(_gateway_env(home)) as (_, url):
        await chat_once(url, home)
        new = agent_pid(home, "local")
        assert new is not None and new != old
        positions = await call(home, agent_url(new), "local", "get_positions", {})
        assert placed["order"]["id"] in json.dumps(positions)
