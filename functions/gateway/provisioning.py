"""Making sure a person's agent runs before their turn.

:class:`Provisioner` is the interface; :class:`LocalProvisioner` starts one
agent subprocess per person on demand (``python -m agent --user <id>``),
waits until it answers (two minutes at most), treats exit code 42 as a clean
idle shutdown, and starts it again on the next message. The Knative
provisioner (a Service per person that scales to zero) implements the same
interface.

Containment on one machine (see ``agent_jail``): each agent runs in its own
namespaces, seeing its person's folder and not the platform's secrets; its
configuration and tokens are written for it under ``run/agents/<id>/``. Agents
never outlive the gateway (a parent-death signal), never run twice for one person
(the agent holds a lock in the person's folder for its life; exit code 43 if it
cannot), and leftovers of an earlier gateway (the lock's holder, checked to be an
agent of this home) are ended when the gateway starts and before a person's agent
is started or their folder deleted.

Several gateway replicas on one machine share the home's agents: each agent carries its
gateway's pid (``DEXORDER_GATEWAY_PID``); an agent whose gateway still runs is no
leftover, and a replica that finds one for the person adopts it (its port is on its
command line) instead of starting another. Who starts an agent is decided under the
person's ``agent:<user>`` lease (``gateway.leases``: Redis across replicas), so two
replicas receiving a first message at once start one. An agent that crashes while it watches alerts
or open orders is started again at once, with backoff, and given up on (logged)
after repeated quick crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import aiohttp
import structlog

from dexorder.config import Settings
from dexorder.process import (
    AGENT_IDLE_EXIT_CODE,
    AGENT_LOCKED_EXIT_CODE,
    active_triggers,
    agent_lock_file,
    die_with_parent,
    free_port,
    lock_holders,
    pid_alive,
    process_args,
    process_env,
)
from dexorder.tokens import (
    AgentTokens,
    check_user_id,
    embedder_token,
    mint_token,
    token_keys,
    write_agent_tokens,
)
from gateway.agent_jail import (
    AgentView,
    agent_env,
    agent_settings,
    isolation_problem,
    jail_argv,
    lake_folders,
    write_settings,
)
from gateway.leases import LeaseLost, Leases, LocalLeases

AgentState = Literal["stopped", "starting", "running", "idle", "crashed"]

log = structlog.get_logger(part="gateway")


class ProvisioningError(RuntimeError):
    """The person's agent could not be started; the message is for them, ``status`` the
    HTTP status the gateway answers with (never a 500)."""

    status = 503


class StartInterrupted(ProvisioningError):
    """This replica lost the person's ``agent:<user>`` lease while starting (or deleting)
    their agent: it stalled past the lease, and another replica may be doing it now."""

    def __init__(self) -> None:
        super().__init__(
            "starting your agent was interrupted on this server (another one may be "
            "finishing it); try again"
        )


@contextlib.asynccontextmanager
async def agent_lease(leases: Leases, user: str) -> AsyncIterator[None]:
    """``leases.hold(f"agent:{user}")``, a lost lease told as :class:`StartInterrupted`
    (every caller of ``ensure`` answers a :class:`ProvisioningError` already)."""
    try:
        async with leases.hold(f"agent:{user}"):
            yield
    except LeaseLost as exc:
        if exc.key != f"agent:{user}":
            raise  # an outer hold's (the turn's): its owner answers it
        raise StartInterrupted() from None


@dataclass(frozen=True)
class AgentEndpoint:
    user: str
    mcp_url: str


class Provisioner(Protocol):
    #: who may start a person's agent (``agent:<user>``); the gateway gives its own
    leases: Leases

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


#: An agent's tokens last a day and are renewed after half of that while it runs.
TOKEN_TTL_S = 86_400
#: How long an agent has to flush and exit after SIGTERM before it is killed.
STOP_GRACE_S = 15.0
#: A crashed agent with work is restarted after 0.5, 1, 2, ... s (at most this) ...
RESTART_MAX_DELAY_S = 30.0
#: ... unless it crashed this many times within RESTART_WINDOW_S: then it waits for a message.
RESTART_MAX_QUICK_CRASHES = 5
RESTART_WINDOW_S = 120.0
#: The environment variable naming the pid of the gateway that started an agent.
GATEWAY_PID_ENV = "DEXORDER_GATEWAY_PID"
#: How long a running agent has to answer ``POST /wake`` before it is taken as busy.
WAKE_TIMEOUT_S = 10.0


@dataclass
class _Agent:
    user: str
    tier: str
    port: int
    proc: asyncio.subprocess.Process
    started_at: float
    state: AgentState = "starting"
    watcher: asyncio.Task[None] | None = None
    #: the agent's own pid (the lock holder): inside namespaces, not ``proc``'s
    pid: int | None = None
    tokens_at: float = 0.0


@dataclass
class LocalProvisioner:
    """Agents as subprocesses of this machine."""

    cfg: Settings
    ready_timeout_s: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    leases: Leases = field(default_factory=LocalLeases)
    _agents: dict[str, _Agent] = field(default_factory=dict)
    _last_exit: dict[str, AgentState] = field(default_factory=dict)
    stats: dict[str, int] = field(
        default_factory=lambda: {"started": 0, "idle_exits": 0, "crashes": 0}
    )
    _crashes: dict[str, list[float]] = field(default_factory=dict)
    _restarts: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _closing: bool = False
    _renewer: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._keys = token_keys(self.cfg)
        end_leftovers(self.cfg.home)  # agents an earlier gateway of this home left running

    def _run_dir(self, user: str) -> Path:
        return Path(self.cfg.home) / "run" / "agents" / user

    def state(self, user: str) -> AgentState:
        agent = self._agents.get(user)
        if agent is not None:
            return agent.state
        return self._last_exit.get(user, "stopped")

    async def ensure(
        self, user: str, tier: str, on_starting: Callable[[], Awaitable[None]] | None = None
    ) -> AgentEndpoint:
        check_user_id(user)
        # two messages at once (on this replica or two) start one agent
        async with agent_lease(self.leases, user):
            agent = self._agents.get(user)
            # one believed running is asked first: it may be in the middle of an idle exit
            if agent is not None and await self._leaving(agent):
                await self._await_exit(agent)  # a fresh one is started below
            if agent is None or agent.proc.returncode is not None:
                adopted = await self._adopt(user)
                if adopted is not None:
                    return adopted
                self._cancel_restart(user)
                if on_starting is not None:
                    await on_starting()
                agent = await self._start(user, tier)
            if agent.state == "starting":
                await self._wait_ready(agent)
            return AgentEndpoint(user, f"http://127.0.0.1:{agent.port}/mcp")

    async def _adopt(self, user: str) -> AgentEndpoint | None:
        """The agent of ``user`` another live gateway replica of this home started, if it
        runs and stays (see :meth:`_wake`); one that is leaving is waited for."""
        for pid in lock_holders(agent_lock_file(self.cfg.agent_dir(user))):
            if not _is_agent_of(pid, Path(self.cfg.home), user) or not _owner_alive(pid):
                continue
            port = _port_of(pid)
            if port is None:
                continue
            if await self._wake(user, port):
                log.info("agent of another gateway replica used", user=user, pid=pid)
                return AgentEndpoint(user, f"http://127.0.0.1:{port}/mcp")
            deadline = time.monotonic() + STOP_GRACE_S
            while pid_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # it lets go of its lock as it exits
        return None

    async def _leaving(self, agent: _Agent) -> bool:
        """Whether a running ``agent`` is in the middle of exiting (see :meth:`_wake`)."""
        if agent.state != "running" or agent.proc.returncode is not None:
            return False
        return not await self._wake(agent.user, agent.port)

    async def _wake(self, user: str, port: int) -> bool:
        """Whether ``agent`` promises to stay for the caller about to get its address.

        Why a promise is asked before the address is handed out: an agent may decide it is
        idle and exit (code 42) at any moment, and a caller that reached it in the middle of
        that exit would fail with a connection error. Retrying that failure at the caller is
        only safe for calls that cannot have had an effect (refused before anything was
        sent, a read, the MCP initialise); a tool call cut off mid-exit (execute_trade)
        might have run, so it must never be sent twice, and the caller cannot tell. The
        agent's ``POST /wake`` (idempotent, so itself always safe to retry) moves the race
        here: served before the agent's idle decision it resets the idle clock (the caller
        then has the whole idle timeout, minutes, for its first call, and each call resets
        it again), after it it is refused (503, or the connection is refused or reset: the
        agent stops listening at once). False: the agent is leaving, start a fresh one.

        An agent that does not answer in time is busy, not leaving: it is kept (True).
        """
        token = mint_token(self._keys, user, "service", 300)
        url = f"http://127.0.0.1:{port}/wake"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAKE_TIMEOUT_S)) as http,
                http.post(url, headers={"Authorization": f"Bearer {token}"}) as r,
            ):
                if r.status == 503:
                    return False
                if r.status != 200:
                    log.warning("agent answered /wake oddly", user=user, status=r.status)
                return True
        except TimeoutError:
            log.warning("agent did not answer /wake in time; kept", user=user)
            return True
        except aiohttp.ClientConnectionError:  # refused, reset: stopped listening, or gone
            return False

    async def _await_exit(self, agent: _Agent) -> None:
        """Wait for a leaving agent's process to end (it serves what it has read, flushes
        and exits 42), stopping it if it takes longer than the grace period."""
        log.info(
            "agent was exiting as it was asked for; waiting to start it again", user=agent.user
        )
        try:
            await asyncio.wait_for(asyncio.shield(agent.proc.wait()), STOP_GRACE_S)
        except TimeoutError:
            await self.stop(agent.user)
        if agent.watcher is not None:
            await agent.watcher  # its exit is counted (idle or crash) before the next start

    async def _start(self, user: str, tier: str) -> _Agent:
        isolated = self.cfg.agent.process_isolation == "namespace"
        if isolated:
            problem = await asyncio.to_thread(isolation_problem)
            if problem is not None:
                log.error("agents cannot be isolated", reason=problem)
                raise ProvisioningError(
                    f"agents cannot be started on this machine: {problem}. Install "
                    "bubblewrap, or (a single-user machine only) set "
                    "agent.process_isolation: none"
                )
        else:
            log.warning(
                "agent.process_isolation is none: this agent can read every file the "
                "gateway can, the platform's secrets and other people's folders included",
                user=user,
            )
        await end_leftover(self.cfg.home, user)
        port = free_port()
        log_dir = Path(self.cfg.home) / "logs" / "agents"
        log_dir.mkdir(parents=True, exist_ok=True)
        agent_dir = self.cfg.agent_dir(user)
        agent_dir.mkdir(parents=True, exist_ok=True)
        run_dir = self._run_dir(user)
        tokens_file = run_dir / "tokens.json"
        self._write_tokens(user, tokens_file)
        config_file = run_dir / "config.yaml"
        write_settings(config_file, agent_settings(self.cfg, self._keys.public_pem, tokens_file))
        env = agent_env(
            dict(os.environ),
            {
                **self.env,
                "DEXORDER_HOME": str(self.cfg.home),
                "DEXORDER_CONFIG": str(config_file),
                "DEXORDER_SECRETS": os.devnull,  # all it may know is in its config
                "DEXORDER_AGENT__TIER": tier,
                # whose it is: another replica of this home adopts it while this one runs
                GATEWAY_PID_ENV: str(os.getpid()),
            },
        )
        command = [sys.executable, "-m", "agent", "--user", user, "--port", str(port)]
        if isolated:
            lake = lake_folders(self.cfg)
            for folder in lake:
                folder.mkdir(parents=True, exist_ok=True)
            view = AgentView(agent_dir, run_dir, tuple(lake))
            command = jail_argv(command, view, Path(self.cfg.home))
            env["HOME"] = env["TMPDIR"] = "/tmp"
        out = open(log_dir / f"{user}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            # killed with the gateway, however it dies (SIGTERM lets an unjailed agent
            # flush; a jailed one is ended with its namespace, its book saved on each order)
            preexec_fn=die_with_parent if not isolated else _die_with_parent_hard,
        )
        out.close()
        agent = _Agent(user, tier, port, proc, time.monotonic(), tokens_at=time.monotonic())
        agent.watcher = asyncio.create_task(self._watch(agent))
        self._agents[user] = agent
        self.stats["started"] += 1
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_tokens())
        log.info("agent starting", user=user, port=port, pid=proc.pid)
        return agent

    def _write_tokens(self, user: str, path: Path) -> None:
        tokens = AgentTokens(
            service=mint_token(self._keys, user, "service", TOKEN_TTL_S),
            embedder=embedder_token(self._keys, user, TOKEN_TTL_S),
        )
        write_agent_tokens(path, tokens)

    async def _renew_tokens(self, every_s: float = 600.0) -> None:
        """Give long-running agents fresh tokens (the agent reads the file at each use)."""
        while True:
            await asyncio.sleep(every_s)
            for agent in list(self._agents.values()):
                if time.monotonic() - agent.tokens_at > TOKEN_TTL_S / 2:
                    self._write_tokens(agent.user, self._run_dir(agent.user) / "tokens.json")
                    agent.tokens_at = time.monotonic()

    async def _wait_ready(self, agent: _Agent) -> None:
        url = f"http://127.0.0.1:{agent.port}/healthz"
        deadline = agent.started_at + self.ready_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if agent.proc.returncode is not None:
                    if agent.proc.returncode == AGENT_LOCKED_EXIT_CODE:
                        raise ProvisioningError(
                            "another agent of yours is still running on this machine; "
                            "try again shortly"
                        )
                    raise ProvisioningError(
                        f"your agent stopped while starting (exit code {agent.proc.returncode})"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as r:
                        if r.status == 200:
                            agent.state = "running"
                            holders = lock_holders(agent_lock_file(self.cfg.agent_dir(agent.user)))
                            agent.pid = holders[0] if holders else None
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
            if code != AGENT_LOCKED_EXIT_CODE and not self._closing:
                self._restart_if_busy(agent)

    def _restart_if_busy(self, agent: _Agent) -> None:
        """Start a crashed agent again if it watches alerts or orders (nobody else would
        until the person's next message), after a backoff; give up on one that keeps
        crashing."""
        user = agent.user
        work = active_triggers(self.cfg.agent_dir(user))
        if work == 0:
            return
        now = time.monotonic()
        crashes = [t for t in self._crashes.get(user, []) if now - t < RESTART_WINDOW_S]
        crashes.append(now)
        self._crashes[user] = crashes
        if len(crashes) > RESTART_MAX_QUICK_CRASHES:
            log.error(
                "agent keeps crashing; not restarted until the person's next message",
                user=user,
                crashes=len(crashes),
                window_s=RESTART_WINDOW_S,
            )
            return
        delay = min(RESTART_MAX_DELAY_S, 0.5 * 2 ** (len(crashes) - 1))
        log.warning("restarting crashed agent", user=user, active_triggers=work, delay_s=delay)
        self._cancel_restart(user)
        self._restarts[user] = asyncio.create_task(self._restart_later(user, agent.tier, delay))

    async def _restart_later(self, user: str, tier: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._restarts.pop(user, None)  # ensure() must not cancel the task it runs in
        try:
            await self.ensure(user, tier)
        except ProvisioningError as exc:
            log.error("crashed agent not restarted", user=user, reason=str(exc))

    def _cancel_restart(self, user: str) -> None:
        task = self._restarts.pop(user, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop(self, user: str) -> None:
        self._cancel_restart(user)
        agent = self._agents.get(user)
        if agent is None:
            return
        agent.state = "stopped"
        if agent.proc.returncode is None:
            # the agent itself gets SIGTERM (inside its namespaces it is not ``proc``), so it
            # saves its state and lets go of its lock before a new one may start
            if agent.pid is not None and pid_alive(agent.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent.pid, signal.SIGTERM)
            else:
                agent.proc.terminate()
            try:
                await asyncio.wait_for(agent.proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                agent.proc.kill()
                if agent.pid is not None and pid_alive(agent.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(agent.pid, signal.SIGKILL)
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
        # no message (to any replica) starts the agent again while its folder goes
        async with agent_lease(self.leases, check_user_id(user)):
            await self.stop(user)
            # an agent of this person this gateway did not start (an earlier gateway's,
            # another replica's, one run by hand) would write on into a folder being deleted
            await end_leftover(self.cfg.home, user, replicas_too=True)
            await asyncio.to_thread(shutil.rmtree, self.cfg.agent_dir(user), True)
            await asyncio.to_thread(shutil.rmtree, self._run_dir(user), True)
        (Path(self.cfg.home) / "logs" / "agents" / f"{user}.log").unlink(missing_ok=True)
        self._last_exit.pop(user, None)
        self._crashes.pop(user, None)

    async def close(self) -> None:
        self._closing = True
        for user in list(self._restarts):
            self._cancel_restart(user)
        if self._renewer is not None:
            self._renewer.cancel()
        await asyncio.gather(*(self.stop(user) for user in list(self._agents)))


def _die_with_parent_hard() -> None:
    die_with_parent(signal.SIGKILL)


def _is_agent_of(pid: int, home: Path, user: str) -> bool:
    """Whether ``pid`` is the agent of ``user`` under ``home`` (never kill anything else)."""
    args = process_args(pid)
    if "agent" not in args or "--user" not in args:
        return False
    i = args.index("--user")
    if i + 1 >= len(args) or args[i + 1] != user:
        return False
    their_home = process_env(pid, "DEXORDER_HOME")
    return their_home is not None and os.path.realpath(their_home) == os.path.realpath(home)


def _owner_alive(pid: int) -> bool:
    """Whether agent ``pid``'s gateway is another replica that still runs. Agents die
    with their gateway (a parent-death signal), so a live owner pid is that gateway."""
    owner = process_env(pid, GATEWAY_PID_ENV)
    if owner is None or not owner.isdigit() or int(owner) == os.getpid():
        return False
    return pid_alive(int(owner))


def _port_of(pid: int) -> int | None:
    args = process_args(pid)
    if "--port" in args and args.index("--port") + 1 < len(args):
        port = args[args.index("--port") + 1]
        return int(port) if port.isdigit() else None
    return None


def _leftovers(home: Path, users: list[str], replicas_too: bool = False) -> list[tuple[str, int]]:
    """Agents of ``users`` under ``home`` this gateway did not start; those of another
    running replica only if ``replicas_too``."""
    found = []
    for user in users:
        for pid in lock_holders(agent_lock_file(home / "agents" / user)):
            if pid == os.getpid() or not _is_agent_of(pid, home, user):
                continue
            if replicas_too or not _owner_alive(pid):
                found.append((user, pid))
    return found


def _signal_all(found: list[tuple[str, int]], sig: int) -> None:
    for user, pid in found:
        log.warning("ending a leftover agent", user=user, pid=pid, signal=sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def end_leftovers(home: Path, grace_s: float = STOP_GRACE_S) -> None:
    """End every agent of ``home`` still running (an earlier gateway's): SIGTERM, so it
    saves its state, then SIGKILL after ``grace_s``. Called as the gateway starts."""
    root = Path(home) / "agents"
    users = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = _leftovers(Path(home), users)
    if not found:
        return
    _signal_all(found, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(pid) for _, pid in found) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all([(u, pid) for u, pid in found if pid_alive(pid)], signal.SIGKILL)


async def end_leftover(
    home: Path, user: str, grace_s: float = STOP_GRACE_S, replicas_too: bool = False
) -> None:
    """End the agent of ``user`` this gateway did not start, if one runs; as above
    (``replicas_too``: even one another running replica started)."""
    found = _leftovers(Path(home), [user], replicas_too)
    if not found:
        return
    _signal_all(found, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(pid) for _, pid in found) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    _signal_all([(u, pid) for u, pid in found if pid_alive(pid)], signal.SIGKILL)
