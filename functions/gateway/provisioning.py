"""Making sure a person's agent runs before their turn.

:class:`Provisioner` is the interface; :class:`LocalProvisioner` starts one
agent subprocess per person on demand (``python -m agent --user <id>``),
waits until it answers (two minutes at most), treats exit code 42 as a clean
idle shutdown, and starts it again on the next message. The Knative
provisioner (a Service per person that scales to zero) implements the same
interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import aiohttp
import structlog

from dexorder.config import Settings
from dexorder.process import AGENT_IDLE_EXIT_CODE, free_port
from dexorder.tokens import check_user_id

AgentState = Literal["stopped", "starting", "running", "idle", "crashed"]

log = structlog.get_logger(part="gateway")


class ProvisioningError(RuntimeError):
    """The person's agent could not be started; the message is for them."""


@dataclass(frozen=True)
class AgentEndpoint:
    user: str
    mcp_url: str


class Provisioner(Protocol):
    async def ensure(
        self, user: str, tier: str, on_starting: Callable[[], Awaitable[None]] | None = None
    ) -> AgentEndpoint:
        """The running agent of ``user``, started first if need be."""
        ...

    def state(self, user: str) -> AgentState: ...

    async def stop(self, user: str) -> None: ...

    async def revoke_tokens(self, user: str, token_ids: set[str]) -> None:
        """Make ``user``'s agent refuse these personal access tokens from now on."""
        ...

    async def delete(self, user: str) -> None:
        """Stop ``user``'s agent and remove everything it kept (workspace, events, vectors)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Agent:
    user: str
    port: int
    proc: asyncio.subprocess.Process
    started_at: float
    state: AgentState = "starting"
    watcher: asyncio.Task[None] | None = None


@dataclass
class LocalProvisioner:
    """Agents as subprocesses of this machine."""

    cfg: Settings
    ready_timeout_s: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    _agents: dict[str, _Agent] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _last_exit: dict[str, AgentState] = field(default_factory=dict)
    stats: dict[str, int] = field(
        default_factory=lambda: {"started": 0, "idle_exits": 0, "crashes": 0}
    )

    def state(self, user: str) -> AgentState:
        agent = self._agents.get(user)
        if agent is not None:
            return agent.state
        return self._last_exit.get(user, "stopped")

    async def ensure(
        self, user: str, tier: str, on_starting: Callable[[], Awaitable[None]] | None = None
    ) -> AgentEndpoint:
        check_user_id(user)
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:  # two messages at once start one agent
            agent = self._agents.get(user)
            if agent is None or agent.proc.returncode is not None:
                if on_starting is not None:
                    await on_starting()
                agent = await self._start(user, tier)
            if agent.state == "starting":
                await self._wait_ready(agent)
            return AgentEndpoint(user, f"http://127.0.0.1:{agent.port}/mcp")

    async def _start(self, user: str, tier: str) -> _Agent:
        port = free_port()
        log_dir = Path(self.cfg.home) / "logs" / "agents"
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{user}.log", "ab")  # noqa: SIM115 - the child keeps it
        env = {
            **os.environ,
            **self.env,
            "DEXORDER_HOME": str(self.cfg.home),
            "DEXORDER_AGENT__TIER": tier,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "--user",
            user,
            "--port",
            str(port),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
        )
        out.close()
        agent = _Agent(user, port, proc, time.monotonic())
        agent.watcher = asyncio.create_task(self._watch(agent))
        self._agents[user] = agent
        self.stats["started"] += 1
        log.info("agent starting", user=user, port=port, pid=proc.pid)
        return agent

    async def _wait_ready(self, agent: _Agent) -> None:
        url = f"http://127.0.0.1:{agent.port}/healthz"
        deadline = agent.started_at + self.ready_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if agent.proc.returncode is not None:
                    raise ProvisioningError(
                        f"your agent stopped while starting (exit code {agent.proc.returncode})"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as r:
                        if r.status == 200:
                            agent.state = "running"
                            log.info(
                                "agent ready",
                                user=agent.user,
                                seconds=round(time.monotonic() - agent.started_at, 2),
                            )
                            return
                await asyncio.sleep(0.05)
        await self.stop(agent.user)
        raise ProvisioningError(
            f"your agent did not start within {self.ready_timeout_s:g}s; try again shortly"
        )

    async def _watch(self, agent: _Agent) -> None:
        code = await agent.proc.wait()
        if self._agents.get(agent.user) is agent:
            del self._agents[agent.user]
        if code == AGENT_IDLE_EXIT_CODE:
            self.stats["idle_exits"] += 1
            self._last_exit[agent.user] = "idle"
            log.info("agent idle, stopped", user=agent.user)
        elif agent.state != "stopped":
            self.stats["crashes"] += 1
            self._last_exit[agent.user] = "crashed"
            log.warning("agent exited", user=agent.user, code=code)

    async def stop(self, user: str) -> None:
        agent = self._agents.get(user)
        if agent is None:
            return
        agent.state = "stopped"
        if agent.proc.returncode is None:
            agent.proc.terminate()
            try:
                await asyncio.wait_for(agent.proc.wait(), 15)
            except TimeoutError:
                agent.proc.kill()
                await agent.proc.wait()
        if agent.watcher is not None:
            await agent.watcher
        self._last_exit[user] = "stopped"

    async def revoke_tokens(self, user: str, token_ids: set[str]) -> None:
        state = self.cfg.agent_dir(check_user_id(user)) / "state"
        state.mkdir(parents=True, exist_ok=True)
        tmp = state / "revoked_tokens.tmp"
        tmp.write_text("".join(f"{t}\n" for t in sorted(token_ids)))
        tmp.replace(state / "revoked_tokens")  # the agent reads it whole or not at all

    async def delete(self, user: str) -> None:
        await self.stop(check_user_id(user))
        await asyncio.to_thread(shutil.rmtree, self.cfg.agent_dir(user), True)
        (Path(self.cfg.home) / "logs" / "agents" / f"{user}.log").unlink(missing_ok=True)
        self._last_exit.pop(user, None)

    async def close(self) -> None:
        for user in list(self._agents):
            await self.stop(user)
