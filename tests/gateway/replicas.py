"""N gateway replicas as real processes (``python -m gateway``) sharing one home (the
agents folder, keys, secrets), a fresh PostgreSQL database and Redis (under a key prefix
of their own), each on its own free ports; and a loopback Anthropic API that can hold its
answers, so a turn blocks where a test wants it to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
from aiohttp import web

from dexorder.process import free_port
from gateway.service import Gateway
from tests.gateway.loopback_anthropic import API_KEY, MessagesApi
from tests.gateway.served import Served, serve_app
from tests.postgres import fresh_database

REDIS_URL = "redis://127.0.0.1:6379/0"


class HeldMessagesApi(MessagesApi):
    """The scripted Messages API, which can hold requests until :meth:`release`, and
    records when each request came and went and how many were in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0
        #: (arrived, answered) monotonic times of each request, in arrival order
        self.spans: list[list[float]] = []
        self.arrived = asyncio.Condition()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def wait_arrivals(self, n: int, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.spans) >= n)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        span = [time.monotonic(), 0.0]
        self.spans.append(span)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        async with self.arrived:
            self.arrived.notify_all()
        try:
            await self.gate.wait()
            return await super().messages(request)
        finally:
            self.in_flight -= 1
            span[1] = time.monotonic()


@contextlib.asynccontextmanager
async def serve_held_api() -> AsyncIterator[tuple[str, HeldMessagesApi]]:
    api = HeldMessagesApi()
    app = web.Application()
    app.router.add_post("/v1/messages", api.messages)
    async with serve_app(app) as url:
        yield url, api


@dataclass
class Replica:
    """One gateway process and an HTTP client for it (``Served``'s helpers, no object)."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    client: Served
    log: Path
    #: its ROUTER for agents' critical events
    events_port: int = 0
    killed: bool = field(default=False)

    @property
    def url(self) -> str:
        return self.client.url

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (its agents die with it: parent-death signal)."""
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)


@dataclass
class Replicas:
    home: Path
    database_url: str
    redis_prefix: str
    members: list[Replica]

    def __getitem__(self, i: int) -> Replica:
        return self.members[i]

    def agent_dir(self, user: str) -> Path:
        return self.home / "agents" / user


async def _start(name: str, env: dict[str, str], log: Path, http: aiohttp.ClientSession) -> Replica:
    port, events_port = free_port(), free_port()
    env = {
        **env,
        "DEXORDER_GATEWAY__PORT": str(port),
        "DEXORDER_GATEWAY__EVENTS_PORT": str(events_port),
    }
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(60):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"replica {name} exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        break
            await asyncio.sleep(0.1)
    return Replica(name, proc, port, Served(cast(Gateway, None), url, http), log, events_port)


@contextlib.asynccontextmanager
async def serve_replicas(
    tmp_path: Path, n: int = 2, lease_s: float = 30.0, anthropic_url: str | None = None
) -> AsyncIterator[Replicas]:
    """``n`` gateway processes sharing a home, a fresh PostgreSQL database and Redis
    (prefix of their own); the offline model, or the Anthropic API at ``anthropic_url``."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    with fresh_database("dexorder_replicas") as database_url:
        env = {
            **os.environ,
            "DEXORDER_HOME": str(home),
            "DEXORDER_CONFIG": str(home / "config.yaml"),  # none: defaults and these
            "DEXORDER_SECRETS": os.devnull,
            "DEXORDER_EMBEDDER__ENABLED": "false",
            "DEXORDER_GATEWAY__DATABASE_URL": database_url,
            "DEXORDER_GATEWAY__REDIS_URL": REDIS_URL,
            "DEXORDER_GATEWAY__REDIS_PREFIX": prefix,
            "DEXORDER_GATEWAY__TURN_LEASE_S": str(lease_s),
        }
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        env.pop("ANTHROPIC_API_KEY", None)
        if anthropic_url is not None:
            env["DEXORDER_GATEWAY__ANTHROPIC_API_KEY"] = API_KEY
            env["DEXORDER_GATEWAY__ANTHROPIC_BASE_URL"] = anthropic_url
        members: list[Replica] = []
        async with aiohttp.ClientSession() as http:
            try:
                # one after the other: the first migrates the accounts database
                for i in range(n):
                    name = "ABCDEFGH"[i]
                    members.append(await _start(name, env, tmp_path / f"gateway-{name}.log", http))
                yield Replicas(home, database_url, prefix, members)
            finally:
                for r in members:
                    if r.proc.returncode is None:
                        r.proc.send_signal(signal.SIGTERM)
                for r in members:
                    try:
                        await asyncio.wait_for(r.proc.wait(), 30)
                    except TimeoutError:
                        r.proc.kill()
                        await r.proc.wait()
