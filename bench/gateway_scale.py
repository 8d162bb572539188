"""The gateway scaled out, and what an idle chat socket costs it (issue 13's benchmark).

Gateway replicas are separate ``python -m gateway`` processes sharing one home (agents,
keys), a fresh PostgreSQL database and Redis under a key prefix of this run
(``gateway.database_url``, ``gateway.redis_url``, ``gateway.redis_prefix``), started by
``launcher/replicas.py`` as the replica tests start them. The model is the offline model
(no API key) and the embedding service is off, so what is measured is the platform, not a
model or RAG.

* **Turns/s, two replicas against one.** ``PEOPLE`` people chat at once, each turn one MCP
  tool (``list my strategies``). A person's turns run one after the other by design (a
  turn lease in Redis), so throughput comes from people in parallel. Each person holds a
  socket on replica A and one on B; a round with one replica sends every turn through
  the A sockets (B idles), a round with two alternates people between A and B — the
  bench client is the round-robin balancer. Rounds of each kind alternate, so the
  machine's drift falls on both alike; the medians are printed and their ratio.
* **Memory per idle open WebSocket.** RSS of replica A (``/proc/PID/status``) before and
  after opening ``SOCKETS`` authenticated chat sockets (spread over the people, like
  tabs), ``(after - before) / SOCKETS`` in KiB; beside the RSS of the bare process just
  after it started.

Part of ``python -m bench gateway`` (sized by ``BENCH_GATEWAY_PEOPLE``,
``BENCH_GATEWAY_SOCKETS``, ``BENCH_GATEWAY_ROUNDS``); alone: ``python -m
bench.gateway_scale [--people N] [--sockets N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import psycopg
import redis.asyncio as redis

from bench.common import free_port, row
from gateway.accounts.db import engine_for
from gateway.accounts.store import Accounts
from launcher.replicas import GatewayProcess as Replica
from launcher.replicas import gateway_replicas, replica_env

if TYPE_CHECKING:
    from bench.gateway import Session

REDIS_URL = "redis://127.0.0.1:6379/0"
PEOPLE = 20  # 2 cores are busy with a few: more only lengthen the agents' start
TURNS_EACH = 5  # per person per round
ROUNDS = 3  # of each kind
SOCKETS = 1000
ASK = "list my strategies"


@dataclass(frozen=True)
class Sizes:
    people: int = PEOPLE
    sockets: int = SOCKETS
    rounds: int = ROUNDS

    @classmethod
    def from_env(cls) -> Sizes:
        return cls(
            int(os.environ.get("BENCH_GATEWAY_PEOPLE", PEOPLE)),
            int(os.environ.get("BENCH_GATEWAY_SOCKETS", SOCKETS)),
            int(os.environ.get("BENCH_GATEWAY_ROUNDS", ROUNDS)),
        )


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_open_files(need: int) -> int:
    """Raise this process's soft limit on open files to at least ``need`` (within the hard
    limit); the replicas started afterwards inherit it. Returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database for this run (dropped after); yields its SQLAlchemy URL."""
    name = f"dexorder_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1/{name}"
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.asynccontextmanager
async def _replicas(
    home: Path, database_url: str, prefix: str, http: aiohttp.ClientSession
) -> AsyncIterator[list[Replica]]:
    """Replicas A and B on the shared stores (A first: it migrates the database)."""
    env = replica_env(
        home,
        database_url,
        REDIS_URL,
        prefix,
        {
            "DEXORDER_LOG_LEVEL": "warning",
            # every bench person signs up from 127.0.0.1: more than a real address may
            "DEXORDER_GATEWAY__AUTH_LIMITS__SIGNUPS_PER_HOUR": "1000",
            "DEXORDER_RELAY__ROUTER_PORT": str(free_port()),
            "DEXORDER_RELAY__XPUB_PORT": str(free_port()),
        },
    )
    async with gateway_replicas(
        env, 2, home, http, start_timeout_s=120, stop_timeout_s=60
    ) as members:
        yield members


async def _forget(prefix: str) -> None:
    """Delete this run's Redis keys."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _round(sockets: list[Session], turns: int) -> float:
    """Turns/s of every socket asking ``turns`` times, the sockets at once."""
    for s in sockets:  # nothing stale in the way of the replies awaited
        while not s.frames.empty():
            s.frames.get_nowait()

    async def talk(s: Session) -> None:
        for _ in range(turns):
            await s.ask(ASK)

    t0 = time.perf_counter()
    await asyncio.gather(*(talk(s) for s in sockets))
    return len(sockets) * turns / (time.perf_counter() - t0)


async def _throughput(
    http: aiohttp.ClientSession, a: Replica, b: Replica, tokens: list[str], rounds: int
) -> dict[str, float]:
    from bench.gateway import _open

    warm_up = asyncio.Semaphore(4)  # agents start on few cores: a few at a time

    async def pair(token: str) -> tuple[Session, Session]:
        async with warm_up:
            on_a = await _open(http, a.url, token)
            await on_a.ask(ASK)  # A starts the person's agent
            on_b = await _open(http, b.url, token)
            await on_b.ask(ASK)  # B finds it (the lock in the person's folder)
            return on_a, on_b

    pairs = await asyncio.gather(*(pair(t) for t in tokens))
    only_a = [on_a for on_a, _ in pairs]
    split = [pair[i % 2] for i, pair in enumerate(pairs)]  # round-robin by person
    one: list[float] = []
    two: list[float] = []
    for _ in range(rounds):
        one.append(await _round(only_a, TURNS_EACH))
        two.append(await _round(split, TURNS_EACH))
    for on_a, on_b in pairs:
        await on_a.close()
        await on_b.close()
    one_rate, two_rate = statistics.median(one), statistics.median(two)
    row(
        f"turns/s, 1 replica, {len(tokens)} people at once",
        f"{one_rate:.0f}/s",
        f"median of {rounds} rounds ({min(one):.0f}-{max(one):.0f}); the other replica idle",
    )
    row(
        "turns/s, 2 replicas (client round-robin)",
        f"{two_rate:.0f}/s",
        f"{two_rate / one_rate:.2f}x 1 replica; median of {rounds} rounds "
        f"({min(two):.0f}-{max(two):.0f}), alternating with those of 1",
    )
    cores = os.cpu_count() or 1
    if cores <= 2:
        row(
            "",
            "",
            f"{cores} cores shared by the replicas, their agents, PostgreSQL, Redis and this "
            "client: 2 replicas cannot exceed them; the ratio shows the shared-state "
            "overhead, not cluster scaling",
        )
    return {"replicas_1_turns_s": one_rate, "replicas_2_turns_s": two_rate}


async def _socket_memory(
    http: aiohttp.ClientSession, a: Replica, tokens: list[str], n: int, bare_kib: int
) -> dict[str, float]:
    from bench.gateway import _open

    pid = a.proc.pid
    before = rss_kib(pid)
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> Session:
        async with gate:
            return await _open(http, a.url, tokens[i % len(tokens)])

    sockets = await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.sleep(1)  # the replica's last sends and presence writes done
    after = rss_kib(pid)
    await asyncio.gather(*(s.close() for s in sockets))
    per = (after - before) / n
    row(
        f"gateway RSS per idle chat WebSocket ({n:,} open)",
        f"{per:.1f} KiB",
        f"bare process {bare_kib / 1024:.0f} MiB; before the sockets {before / 1024:.0f} MiB, "
        f"after {after / 1024:.0f} MiB ({len(tokens)} people, ~{n // len(tokens)} each)",
    )
    return {"ws_rss_kib": per, "gateway_bare_rss_mib": bare_kib / 1024}


async def _run(home: Path, database_url: str, prefix: str, sizes: Sizes) -> dict[str, float]:
    from bench.gateway import _person

    accounts = Accounts(engine_for(database_url))
    out: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)  # the sockets are all open at once
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        _replicas(home, database_url, prefix, http) as (a, b),
    ):
        bare = rss_kib(a.proc.pid)
        people = [await _person(http, a.url, n) for n in range(sizes.people)]
        for p in people:  # no rate limit in the way of the measurement
            accounts.set_tier(p["account"]["id"], "enterprise")
        tokens = [p["access_token"] for p in people]
        out |= await _throughput(http, a, b, tokens, sizes.rounds)
        if sizes.sockets:
            out |= await _socket_memory(http, a, tokens, sizes.sockets, bare)
    accounts.engine.dispose()
    return out


def scale(sizes: Sizes | None = None) -> dict[str, float]:
    """Both figures on fresh stores (called by :func:`bench.gateway.main`)."""
    sizes = sizes or Sizes.from_env()
    print(
        f"  gateway replicas on PostgreSQL + Redis, offline model, no embedder "
        f"({os.cpu_count()} cores; other load on the machine shows in these)"
    )
    raise_open_files(sizes.sockets * 2 + 1024)  # the client's ends and the replica's
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as database_url:
        home = Path(tmp) / "home"
        home.mkdir()
        try:
            out = asyncio.run(_run(home, database_url, prefix, sizes))
        finally:
            asyncio.run(_forget(prefix))
    row("  (replicas and sockets: start to end)", f"{time.monotonic() - t0:.0f} s")
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_scale")
    default = Sizes.from_env()
    parser.add_argument("--people", type=int, default=default.people)
    parser.add_argument("--sockets", type=int, default=default.sockets)
    parser.add_argument("--rounds", type=int, default=default.rounds)
    args = parser.parse_args(argv)
    print("(f) gateway: two replicas against one, and memory per idle WebSocket")
    return scale(Sizes(args.people, args.sockets, args.rounds))


if __name__ == "__main__":
    main()
