"""Idle shutdown: the pure rule, and a real agent process exiting with code 42."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agent.lifecycle import IDLE_EXIT_CODE, is_idle, wait_until_idle
from agent.person import Activity
from launcher.ephemeral import free_port
from tests.agent.conftest import Agent


@pytest.mark.parametrize(
    ("now", "timeout", "triggers", "idle"),
    [
        (100.0, 60.0, 0, True),
        (59.0, 60.0, 0, False),
        (1e9, None, 0, False),  # enterprise: never
        (1e9, 60.0, 1, False),  # an active alert keeps it running
    ],
)
def test_idle_rule(now: float, timeout: float | None, triggers: int, idle: bool) -> None:
    assert is_idle(now, 0.0, timeout, triggers) is idle


async def test_a_call_longer_than_the_timeout_does_not_make_the_agent_idle() -> None:
    clock = [0.0]
    activity = Activity(last_call=0.0)
    activity.begin()  # a call starts at 0 (e.g. a long backtest) ...
    activity.last_call = 0.0
    clock[0] = 100.0  # ... and runs past the 60 s timeout
    waiting = asyncio.create_task(wait_until_idle(activity, 60.0, lambda: 0, lambda: clock[0]))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    activity.end()  # it ends now: the idle clock starts from here
    activity.last_call = 100.0
    await asyncio.sleep(0.1)
    assert not waiting.done()
    clock[0] = 160.0
    assert not activity.exiting
    await asyncio.wait_for(waiting, 10)
    assert activity.exiting  # published with the decision: /wake refuses from now on


@pytest.mark.integration
async def test_wake_holds_an_agent_until_it_decides_to_exit_then_is_refused(
    agent: Agent,
) -> None:
    """The provisioner's ``POST /wake`` before it hands out an agent's address: served, it
    resets the idle clock; once the agent has decided to exit, 503 (start a fresh one)."""
    wake = agent.url.removesuffix("/mcp") + "/wake"
    activity = agent.person.activity
    async with httpx2.AsyncClient() as http:
        assert (await http.post(wake)).status_code == 401  # a caller of the platform only
        headers = {"Authorization": f"Bearer {agent.token()}"}
        activity.last_call = 0.0
        assert (await http.post(wake, headers=headers)).status_code == 200
        assert activity.last_call > 0.0 and activity.in_flight == 0  # the clock restarted
        # idle at once (a timeout of 0): decided, and /wake no longer promises anything
        await asyncio.wait_for(wait_until_idle(activity, 0.0, lambda: 0), 10)
        refused = await http.post(wake, headers=headers)
        assert refused.status_code == 503 and "exiting" in refused.json()["error"]


def start_agent(home: Path, *args: str, idle_s: int = 2) -> tuple[subprocess.Popen[str], str, str]:
    port = free_port()
    env = {
        **os.environ,
        "DEXORDER_HOME": str(home),
        "DEXORDER_AGENT__IDLE_TIMEOUT_S": json.dumps(
            {"free": idle_s, "pro": 60, "enterprise": None}
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "agent", "--user", "alice", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
    token = proc.stdout.readline().strip().removeprefix("token: ")
    return proc, url, token


@pytest.mark.integration
async def test_dexorder_agent_serves_then_exits_42_when_idle(tmp_path: Path) -> None:
    proc, url, token = start_agent(tmp_path / "home")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp"), url
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(url, http_client=http)) as c,
        ):
            result = await c.call_tool("get_watchlist", {})
            assert not result.is_error
        last_call = time.monotonic()
        assert proc.wait(timeout=30) == IDLE_EXIT_CODE
        assert time.monotonic() - last_call >= 2 - 0.1  # not before the timeout
        rest = proc.stdout.read() if proc.stdout else ""
        assert "was idle; exiting with code 42" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_user_id_is_refused_cleanly(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "launcher", "agent", "--user", "../bob"],
        env={**os.environ, "DEXORDER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "invalid user id" in res.stderr and "Traceback" not in res.stderr
