"""The MCP door's added latency: one cheap tool call (``get_positions``) by an outside MCP
client through the gateway's ``/mcp`` (a personal access token: authentication, a fresh
agent token, the proxy) against the same call straight to the person's running agent.

Calls alternate between the two paths, so the machine's drift falls on both alike.
Part of ``python -m bench gateway``; alone: ``python -m bench.mcp_door [CALLS]``.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.common import pct, row
from dexorder.config import load_config
from dexorder.tokens import mint_token, token_keys

WARM_UP = 20


@contextlib.asynccontextmanager
async def _client(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def door_latency(
    http: aiohttp.ClientSession, base: str, home: Path, access_token: str, calls: int = 200
) -> dict[str, float]:
    """Time ``calls`` tool calls each way for the person of ``access_token`` (a login
    session: it makes the personal access token the outside client uses)."""
    from gateway.platform_calls import platform_token

    keys = token_keys(load_config(home))
    auth = {"Authorization": f"Bearer {access_token}"}
    async with http.post(f"{base}/api/tokens", json={"name": "bench"}, headers=auth) as r:
        made = await r.json()
        assert r.status == 201, made
    async with http.get(f"{base}/api/me", headers=auth) as r:
        user = (await r.json())["account"]["id"]
    platform = {"Authorization": f"Bearer {platform_token(keys)}"}
    async with http.post(f"{base}/internal/agent", json={"user": user}, headers=platform) as r:
        found = await r.json()
        assert r.status == 200, found
        agent_url = found["mcp_url"]
    door_ms: list[float] = []
    bare_ms: list[float] = []
    async with (
        _client(f"{base}/mcp", made["token"]) as door,
        _client(agent_url, mint_token(keys, user, "pat", 3600)) as bare,
    ):
        for i in range(WARM_UP + calls):
            for client, times in ((door, door_ms), (bare, bare_ms)):
                t0 = time.perf_counter()
                result = await client.call_tool("get_positions", {})
                if i >= WARM_UP:
                    times.append((time.perf_counter() - t0) * 1000)
                assert not result.is_error, result
    added = pct(door_ms, 50) - pct(bare_ms, 50)
    row(
        "MCP door: tool call p50 (PAT, through /mcp)",
        f"{pct(door_ms, 50):.2f} ms",
        f"straight to the agent p50 {pct(bare_ms, 50):.2f} ms (+{added:.2f} ms)",
    )
    row(
        "MCP door: tool call p99",
        f"{pct(door_ms, 99):.2f} ms",
        f"straight to the agent p99 {pct(bare_ms, 99):.2f} ms "
        f"(+{pct(door_ms, 99) - pct(bare_ms, 99):.2f} ms); {calls} calls each",
    )
    return {
        "door_p50_ms": pct(door_ms, 50),
        "door_p99_ms": pct(door_ms, 99),
        "door_direct_p50_ms": pct(bare_ms, 50),
        "door_direct_p99_ms": pct(bare_ms, 99),
        "door_added_p50_ms": added,
    }


async def _alone(env: dict[str, str], calls: int) -> dict[str, float]:
    from bench.gateway import _person

    base = f"http://127.0.0.1:{env['DEXORDER_GATEWAY__PORT']}"
    async with aiohttp.ClientSession() as http:
        person = await _person(http, base, 0)
        return await door_latency(
            http, base, Path(env["DEXORDER_HOME"]), person["access_token"], calls
        )


def main(calls: int = 200) -> dict[str, float]:
    import asyncio

    from bench.gateway import _platform

    print("MCP door: a tool call through /mcp against one straight to the agent")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        with _platform(home) as env:
            return asyncio.run(_alone(env, calls))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
