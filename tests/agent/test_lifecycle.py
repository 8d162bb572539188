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
    await asyncio.wait_for(waiting, 10)


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
