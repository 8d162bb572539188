"""N gateway replicas as real processes (``python -m gateway``, started by
``launcher/replicas.py``) sharing one home (the agents folder, keys, secrets), a fresh
PostgreSQL database and Redis (under a key prefix of their own), each on its own free
ports; and a loopback Anthropic API that can hold its answers, so a turn blocks where a
test wants it to."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
from aiohttp import web

from gateway.service import Gateway
from launcher.replicas import gateway_replicas, replica_env
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
        # the whole request is here before it counts as arrived (a replica stopped right
        # after must not leave half its body unsent, its answer then going to another)
        await request.read()
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

    def stop(self) -> None:
        """SIGSTOP: the process stalls (its leases go unrenewed) until :meth:`cont`."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT: the stalled process runs on from where it was."""
        self.proc.send_signal(signal.SIGCONT)


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


@contextlib.asynccontextmanager
async def serve_replicas(
    tmp_path: Path,
    n: int = 2,
    lease_s: float = 30.0,
    anthropic_url: str | None = None,
    settings: dict[str, str] | None = None,
) -> AsyncIterator[Replicas]:
    """``n`` gateway processes sharing a home, a fresh PostgreSQL database and Redis
    (prefix of their own); the offline model, or the Anthropic API at ``anthropic_url``;
    ``settings``: further ``DEXORDER_…`` variables."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    with fresh_database("dexorder_replicas") as database_url:
        env = replica_env(
            home,
            database_url,
            REDIS_URL,
            prefix,
            {"DEXORDER_GATEWAY__TURN_LEASE_S": str(lease_s), **(settings or {})},
        )
        if anthropic_url is not None:
            env["DEXORDER_GATEWAY__ANTHROPIC_API_KEY"] = API_KEY
            env["DEXORDER_GATEWAY__ANTHROPIC_BASE_URL"] = anthropic_url
        async with (
            aiohttp.ClientSession() as http,
            gateway_replicas(env, n, tmp_path, http) as started,
        ):
            members = [
                Replica(
                    p.name,
                    p.proc,
                    p.port,
                    Served(cast(Gateway, None), p.url, http),
                    p.log,
                    p.events_port,
                )
                for p in started
            ]
            yield Replicas(home, database_url, prefix, members)
