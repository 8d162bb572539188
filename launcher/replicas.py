"""Gateway replicas as local processes (``python -m gateway``) on shared stores, for the
scale-out tests (``tests/gateway/replicas.py``) and benchmark (``bench/gateway_scale.py``).

The replicas share one home (agents, keys, secrets), one accounts database (PostgreSQL:
the caller makes it) and Redis under a key prefix of their own, each on its own free
ports. The first one started migrates the database, so they start one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from dexorder.process import free_port

__all__ = ["GatewayProcess", "gateway_replicas", "replica_env", "start_replica"]

#: Names of the replicas, in the order they start.
NAMES = "ABCDEFGH"


@dataclass
class GatewayProcess:
    """One replica: its process, its HTTP address and its log."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    #: its ROUTER for agents' critical events
    events_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def replica_env(
    home: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    settings: Mapping[str, str] | None = None,
    *,
    offline: bool = True,
) -> dict[str, str]:
    """This process's environment for replicas under ``home`` sharing the stores given,
    no configuration file and no secrets file, the embedding service off; ``offline``:
    no Kafka and no Anthropic key of this environment's. ``settings`` are further
    ``DEXORDER_…`` variables."""
    env = {
        **os.environ,
        "DEXORDER_HOME": str(home),
        "DEXORDER_CONFIG": str(home / "config.yaml"),  # none: defaults and these
        "DEXORDER_SECRETS": os.devnull,
        "DEXORDER_EMBEDDER__ENABLED": "false",
        "DEXORDER_GATEWAY__DATABASE_URL": database_url,
        "DEXORDER_GATEWAY__REDIS_URL": redis_url,
        "DEXORDER_GATEWAY__REDIS_PREFIX": redis_prefix,
        **(settings or {}),
    }
    if offline:
        for variable in ("KAFKA_BOOTSTRAP_SERVERS", "ANTHROPIC_API_KEY"):
            env.pop(variable, None)
    return env


async def start_replica(
    name: str, env: dict[str, str], log: Path, http: aiohttp.ClientSession, timeout_s: float = 60
) -> GatewayProcess:
    """Start one replica on free ports and wait until its ``/healthz`` answers 200."""
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
    replica = GatewayProcess(name, proc, port, events_port, log)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"replica {name} exited: {log.read_text()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(replica.url + "/healthz") as r:
                        if r.status == 200:
                            return replica
                await asyncio.sleep(0.1)  # polling its readiness: it has no other signal
    except BaseException:
        await stop_replicas([replica], 5)
        raise


async def stop_replicas(members: list[GatewayProcess], timeout_s: float = 30) -> None:
    """SIGTERM (each stops the agents it started), SIGKILL after ``timeout_s``. A stopped
    (SIGSTOP) replica is continued first, or it could not end."""
    for r in members:
        if r.proc.returncode is None:
            r.proc.send_signal(signal.SIGCONT)
            r.proc.send_signal(signal.SIGTERM)
    for r in members:
        try:
            await asyncio.wait_for(r.proc.wait(), timeout_s)
        except TimeoutError:
            r.proc.kill()
            await r.proc.wait()


@contextlib.asynccontextmanager
async def gateway_replicas(
    env: dict[str, str],
    n: int,
    logs: Path,
    http: aiohttp.ClientSession,
    *,
    start_timeout_s: float = 60,
    stop_timeout_s: float = 30,
) -> AsyncIterator[list[GatewayProcess]]:
    """``n`` replicas (A, B, …) of ``env`` (:func:`replica_env`), logging to
    ``logs/gateway-<name>.log``; stopped after."""
    members: list[GatewayProcess] = []
    try:
        for name in NAMES[:n]:  # one after the other: the first migrates the database
            log = logs / f"gateway-{name}.log"
            members.append(await start_replica(name, env, log, http, start_timeout_s))
        yield members
    finally:
        await stop_replicas(members, stop_timeout_s)
