"""Running a part as a process: signals, the health endpoint, orderly shutdown."""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from dexorder.config import Settings
from dexorder.health import HealthCheck, serve_health

#: A person's agent exits with this code after a clean idle shutdown (not a crash);
#: the provisioner then starts it again on the next message.
AGENT_IDLE_EXIT_CODE = 42
#: A person's agent exits with this code at once when another agent of the same person
#: holds the person's lock (two agents would each write the paper book and lose orders).
AGENT_LOCKED_EXIT_CODE = 43

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Meant as a ``preexec_fn``: a child started this way never outlives the process
    (strictly: the thread) that started it, even when that one is killed with SIGKILL.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)


class AlreadyLocked(RuntimeError):
    """Another process holds the lock; ``holders`` are their pids where this host shows them."""

    def __init__(self, path: Path, holders: list[int]) -> None:
        self.path, self.holders = path, holders
        who = f" (pid {', '.join(map(str, holders))})" if holders else ""
        super().__init__(f"{path} is held by another process{who}")


def agent_lock_file(agent_dir: Path) -> Path:
    """The lock a person's agent holds for its whole life (in the person's folder)."""
    return agent_dir / "agent.lock"


def hold_lock(path: Path) -> int:
    """An open descriptor holding an exclusive ``flock`` on ``path``, or :class:`AlreadyLocked`.

    The kernel drops the lock when the process ends however it ends, so a crashed holder
    never leaves a stale lock behind. The descriptor is not inherited by children.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyLocked(path, lock_holders(path)) from None
    return fd


def lock_holders(path: Path) -> list[int]:
    """Pids (as this process's PID namespace numbers them) holding a ``flock`` on ``path``.

    Read from ``/proc/locks``, which names a lock by device and inode; a holder in another
    mount namespace (an agent in its own) is found all the same.
    """
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return []
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF" ("->" marks a waiter)
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == where:
            pid = int(parts[4])
            if pid > 0 and pid not in pids:
                pids.append(pid)
    return pids


def process_args(pid: int) -> list[str]:
    """The command line of process ``pid`` (empty when it is gone or hidden)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def process_env(pid: int, name: str) -> str | None:
    """The value of environment variable ``name`` in process ``pid``, if readable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a process that has not yet been reaped (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_part(
    part: str,
    health_port: int,
    check: HealthCheck,
    main: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    host: str = "127.0.0.1",
) -> None:
    """Serve ``/healthz`` and ``/metrics``, run ``main`` until SIGINT/SIGTERM call ``stop``."""
    log = structlog.get_logger(part=part)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    health = await serve_health(host, health_port, part, check)
    try:
        await main()
    finally:
        await health.cleanup()
        log.info("stopped")


def main(run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry point of a part: run it; bad configuration is one clear line and exit code 2."""
    from dexorder.config import ConfigError

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve_app(part: str, build: Callable[[Settings], tuple[web.Application, str, int]]) -> None:
    """Entry point of a part that is one aiohttp app: ``build(cfg)`` gives the app and where
    it listens; served until SIGINT/SIGTERM. Bad configuration: one line, exit code 2."""
    from dexorder.config import ConfigError, load_config
    from dexorder.log import setup_logging

    try:
        cfg = load_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log = setup_logging(part, cfg.log_level)
    app, host, port = build(cfg)
    log.info("listening", url=f"http://{host}:{port}")
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)


def _work_file(agent_dir: Path) -> Path:
    return agent_dir / "state" / "active_triggers"


def write_active_triggers(agent_dir: Path, count: int) -> None:
    """Tell the supervisor how many alerts and open orders the agent watches (it restarts a
    crashed agent that has some without waiting for the person's next message)."""
    path = _work_file(agent_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{count}\n")
    os.replace(tmp, path)


def active_triggers(agent_dir: Path) -> int:
    """What the agent last said with :func:`write_active_triggers` (0 when it never did)."""
    try:
        return max(0, int(_work_file(agent_dir).read_text().strip() or 0))
    except (OSError, ValueError):
        return 0
