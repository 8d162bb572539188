"""(f) The gateway: overhead per chat turn, turns/s over 50 WebSocket sessions, cold start.

The gateway runs as ``python -m gateway`` (its own process, as ``dexorder up`` runs it)
with the embedding service, on a fresh home; each person's agent is a subprocess the
local provisioner starts. The model is the offline model, so what is measured is the
platform, not an LLM. Figures, each beside a baseline from the same run:

* gateway overhead of a turn with a warm agent (context + RAG + prompt + saving both
  messages; the turn's time less model and tool time, as the gateway reports it),
  p50/p99; baseline: one bare MCP tool call to the same agent;
* a context fetch (the four resources, on a cache miss), p50;
* turns/s over 50 concurrent WebSocket sessions (50 people, each agent warm, each turn
  one MCP tool); baseline: turns/s of one session alone;
* cold first answer: a new person's first message → reply (provisioning included),
  p50 of 5; baseline: a warm answer of the same kind;
* an outside MCP client's tool call through the door (``/mcp``, a personal access
  token), p50/p99; baseline: the same call straight to the agent (:mod:`bench.mcp_door`);
* first, on their own fresh PostgreSQL + Redis (:mod:`bench.gateway_scale`): turns/s with
  two gateway replicas against one, and the gateway's RSS per idle chat WebSocket at
  1,000 open, beside the bare process's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import free_port, pct, row
from bench.gateway_scale import scale
from bench.mcp_door import door_latency
from dexorder.config import load_config
from dexorder.tokens import mint_token, token_keys
from gateway.accounts.db import engine_for
from gateway.accounts.store import Accounts
from gateway.harness.agent_link import AgentLink

SESSIONS = 50
TURNS_EACH = 10
PASSWORD = "bench password 123"


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float, ready_key: str | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                body = json.loads(r.read())
                if ready_key is None or body.get(ready_key):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout_s}s")


@contextmanager
def _platform(home: Path) -> Iterator[dict[str, str]]:
    """The embedding service and the gateway on free ports."""
    env = {
        **os.environ,
        "DEXORDER_HOME": str(home),
        "DEXORDER_LOG_LEVEL": "warning",
        # every bench person signs up from 127.0.0.1: more than a real address may
        "DEXORDER_GATEWAY__AUTH_LIMITS__SIGNUPS_PER_HOUR": "1000",
        "DEXORDER_GATEWAY__PORT": str(free_port()),
        "DEXORDER_GATEWAY__EVENTS_PORT": str(free_port()),
        "DEXORDER_EMBEDDER__PORT": str(free_port()),
        "DEXORDER_RELAY__ROUTER_PORT": str(free_port()),
        "DEXORDER_RELAY__XPUB_PORT": str(free_port()),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        embedder = subprocess.Popen(
            [sys.executable, "-m", "services.embedder"], env=env, stderr=subprocess.DEVNULL
        )
        procs.append(embedder)
        _wait_http(
            f"http://127.0.0.1:{env['DEXORDER_EMBEDDER__PORT']}/healthz", embedder, 180, "ready"
        )
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(home / "gateway.log", "ab"),  # noqa: SIM115
        )
        procs.append(gateway)
        _wait_http(f"http://127.0.0.1:{env['DEXORDER_GATEWAY__PORT']}/healthz", gateway, 120)
        yield env
    finally:
        for p in reversed(procs):  # the gateway stops its agents
            p.terminate()
            p.wait(60)


class Session:
    """A chat socket read all the time (so the server's pings are answered while idle)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self.frames.put(json.loads(msg.data))

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()

    async def ask(self, text: str) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        await self.ws.send_str(json.dumps({"type": "message", "text": text}))
        while True:
            frame = await asyncio.wait_for(self.frames.get(), 300)
            if frame["type"] == "reply":
                return (time.perf_counter() - t0) * 1000, frame
            if frame["type"] == "error":
                raise RuntimeError(frame["text"])


async def _person(http: aiohttp.ClientSession, base: str, n: int) -> dict[str, Any]:
    async with http.post(
        f"{base}/api/auth/signup", json={"email": f"p{n}@bench.example", "password": PASSWORD}
    ) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 201, body
        return body


async def _open(http: aiohttp.ClientSession, base: str, token: str) -> Session:
    ws = await http.ws_connect(base.replace("http", "ws") + "/api/chat/ws", heartbeat=60)
    await ws.send_str(json.dumps({"type": "auth", "token": token}))
    ready = json.loads((await ws.receive(timeout=30)).data)
    assert ready["type"] == "ready", ready
    return Session(ws)


async def _run(env: dict[str, str]) -> dict[str, float]:
    base = f"http://127.0.0.1:{env['DEXORDER_GATEWAY__PORT']}"
    home = Path(env["DEXORDER_HOME"])
    accounts = Accounts(engine_for(f"sqlite:///{home / 'state' / 'accounts.db'}"))
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        people = [await _person(http, base, n) for n in range(SESSIONS + 6)]
        for p in people:  # no rate limit in the way of the measurement
            accounts.set_tier(p["account"]["id"], "enterprise")

        # --- overhead of a turn, warm agent ----------------------------------------
        first = await _open(http, base, people[0]["access_token"])
        for _ in range(20):
            await first.ask("hello")
        overhead, client_ms = [], []
        phases: dict[str, list[float]] = {}
        for _ in range(200):
            ms, reply = await first.ask("hello")
            t = reply["timings"]
            overhead.append(t["turn_ms"] - t.get("model_ms", 0) - t.get("tools_ms", 0))
            client_ms.append(ms)
            for k, v in t.items():
                phases.setdefault(k, []).append(v)
        user = people[0]["account"]["id"]
        bare, context_ms = await _bare_mcp(home, base, user)
        row(
            "turn overhead p50 (context+RAG+prompt+save)",
            f"{pct(overhead, 50):.1f} ms",
            f"bare MCP call p50 {pct(bare, 50):.2f} ms ({pct(overhead, 50) / pct(bare, 50):.1f}x)",
        )
        row("turn overhead p99", f"{pct(overhead, 99):.1f} ms")
        row(
            "context fetch (4 resources, a cache miss) p50",
            f"{pct(context_ms, 50):.1f} ms",
            "cached for gateway.context_cache_s (120 s)",
        )
        row(
            "  of which (p50)",
            "",
            ", ".join(f"{k.removesuffix('_ms')} {pct(v, 50):.1f}" for k, v in phases.items()),
        )
        row(
            "whole turn at the client p50 (offline model)",
            f"{pct(client_ms, 50):.1f} ms",
            f"p99 {pct(client_ms, 99):.1f} ms",
        )
        out |= {
            "overhead_p50_ms": pct(overhead, 50),
            "overhead_p99_ms": pct(overhead, 99),
            "bare_mcp_p50_ms": pct(bare, 50),
        }

        # --- 50 sessions --------------------------------------------------------------
        warm_up = asyncio.Semaphore(4)  # agents start on 2 cores: a few at a time

        async def warm(p: dict[str, Any]) -> Session:
            async with warm_up:
                s = await _open(http, base, p["access_token"])
                await s.ask("list my strategies")
                return s

        sessions = [first, *await asyncio.gather(*(warm(p) for p in people[1:SESSIONS]))]
        one_t0 = time.perf_counter()
        for _ in range(TURNS_EACH):
            await first.ask("list my strategies")
        one_rate = TURNS_EACH / (time.perf_counter() - one_t0)

        async def talk(s: Session) -> None:
            for _ in range(TURNS_EACH):
                await s.ask("list my strategies")

        t0 = time.perf_counter()
        await asyncio.gather(*(talk(s) for s in sessions))
        rate = SESSIONS * TURNS_EACH / (time.perf_counter() - t0)
        row(
            f"turns/s, {SESSIONS} WebSocket sessions",
            f"{rate:.0f}/s",
            f"one session alone {one_rate:.0f}/s ({rate / one_rate:.1f}x)",
        )
        out |= {
            "turns_per_s": rate,
            "one_session_per_s": one_rate,
            "context_p50_ms": pct(context_ms, 50),
        }

        # --- cold first answer ------------------------------------------------------------
        cold, warm_ms = [], []
        for p in people[SESSIONS : SESSIONS + 5]:
            s = await _open(http, base, p["access_token"])
            ms, _ = await s.ask("list my strategies")
            cold.append(ms)
            ms, _ = await s.ask("list my strategies")
            warm_ms.append(ms)
            await s.close()
        row(
            "cold first answer p50 (provision + reply)",
            f"{pct(cold, 50) / 1000:.2f} s",
            f"max {max(cold) / 1000:.2f} s; warm answer p50 {pct(warm_ms, 50):.0f} ms",
        )
        out |= {"cold_first_answer_s": pct(cold, 50) / 1000}
        for s in sessions:
            await s.close()

        # --- the MCP door: an outside client's tool call through /mcp vs straight -----------
        out |= await door_latency(http, base, home, people[0]["access_token"])
    return out


async def _bare_mcp(home: Path, base: str, user: str) -> tuple[list[float], list[float]]:
    """Round trips of one MCP tool call straight to ``user``'s running agent, and of a
    fetch of the four context resources."""
    cfg = load_config(home)
    keys = token_keys(cfg)
    from gateway.platform_calls import platform_token

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/internal/agent",
            json={"user": user},
            headers={"Authorization": f"Bearer {platform_token(keys)}"},
        ) as r,
    ):
        url = (await r.json())["mcp_url"]
    token = mint_token(keys, user)
    times: list[float] = []
    context: list[float] = []
    async with AgentLink.open(url, token) as link:
        for i in range(220):
            t0 = time.perf_counter()
            await link.client.call_tool("get_positions", {})
            if i >= 20:
                times.append((time.perf_counter() - t0) * 1000)
        for i in range(120):
            t0 = time.perf_counter()
            await link.context()
            if i >= 20:
                context.append((time.perf_counter() - t0) * 1000)
    return times, context


def main() -> dict[str, float]:
    print("(f) gateway: chat turns over WebSocket, offline model, real agents and embedder")
    scaled = scale()  # first: the MCP door's rows stay the last ones
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        with _platform(home) as env:
            return asyncio.run(_run(env)) | scaled


if __name__ == "__main__":
    main()
