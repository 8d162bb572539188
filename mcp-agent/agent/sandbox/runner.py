"""The parent side of the sandbox: start a run with limits, collect what it says.

The run is a fresh process tree in its own namespaces (:mod:`.isolation`),
unless the operator chose ``agent.sandbox.isolation: none`` for a single-user
machine. Limits and how a breach shows:

* CPU time (``RLIMIT_CPU``): the kernel stops the process with SIGXCPU;
* memory (``RLIMIT_AS``): allocations fail with ``MemoryError``;
* wall clock: the run is killed when its time is up (a ``sleep`` uses no CPU);
* output: stdout and stderr together are cut at the limit and the run killed;
* processes: none besides the run itself (the seccomp filter refuses them);
* files: the scratch folder is a size-capped tmpfs, plus ``RLIMIT_FSIZE``/``RLIMIT_NOFILE``.

Printed output and the typed reply come back on two pipes read together, so a
large reply cannot block the run while the parent waits on its output.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import structlog

from agent.sandbox import isolation, protocol

log = structlog.get_logger(part="agent")

Isolation = Literal["kernel", "none"]
#: the limit a run breached
LimitName = Literal["cpu", "memory", "wall_clock", "output", "policy"]


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    cpu_s: int = 10
    memory_mb: int = 1024
    wall_s: float = 30.0
    output_bytes: int = 256_000
    file_mb: int = 100
    scratch_mb: int = 64


@dataclass(frozen=True)
class SandboxResult:
    """How a run ended. ``error`` names the limit or the exception when it failed."""

    ok: bool
    output: str = ""
    error: str | None = None
    limit: LimitName | None = None
    outcome: protocol.Outcome | None = None
    seconds: float = 0.0


#: Told, on the thread the run is collected on, how far it got: done of total.
OnProgress = Callable[[int, int], None]


class SandboxUnavailable(RuntimeError):
    """The person's code is refused: the sandbox cannot be set up on this host."""


_STARTUP_MB = 4096


def _limit_child(limits: Limits) -> None:
    os.setsid()  # its own process group, so killing it reaches bwrap and all it started
    cpu = limits.cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    # a generous bound for start-up; the child narrows it to memory_mb once its
    # libraries are loaded (their mappings are large and not the person's doing)
    mem = (limits.memory_mb + _STARTUP_MB) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    size = limits.file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _environment(result_fd: int, progress_fd: int, home: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "TZ": "UTC",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(isolation.import_roots()),
        "DEXORDER_SANDBOX_RESULT_FD": str(result_fd),
        protocol.PROGRESS_FD_ENV: str(progress_fd),
    }
    # some processors need these for OpenBLAS to compute right (the host sets them)
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def check_available(mode: Isolation, proc: isolation.ProcMount = "mount") -> None:
    """Raise :class:`SandboxUnavailable` when ``mode`` (with ``proc``) cannot run the
    person's code here."""
    if mode == "none":
        return
    st = isolation.status(proc)
    if not st.available:
        raise SandboxUnavailable(
            f"the person's code cannot run: the sandbox is unavailable on this host "
            f"({st.reason}); install bubblewrap, or set agent.sandbox.isolation: none "
            f"on a single-user machine"
        )


def run_sandboxed(
    job: protocol.Job,
    *,
    workspace: Path,
    inputs: Path | None = None,
    limits: Limits = Limits(),
    mode: Isolation = "kernel",
    on_progress: OnProgress | None = None,
    proc: isolation.ProcMount = "mount",
) -> SandboxResult:
    """Run ``job`` in a fresh sandbox; ``inputs`` (read-only there) holds the files it needs;
    ``on_progress`` hears how far it got (a sweep's combinations) while it runs; ``proc``
    (kernel mode): whether the run gets a ``/proc`` (``agent.sandbox.proc``)."""
    check_available(mode, proc)
    own_scratch = Path(tempfile.mkdtemp(prefix="dexorder-run-")) if mode == "none" else None
    result_r, result_w = os.pipe()
    progress_r, progress_w = os.pipe()
    fds = [result_w, progress_w]
    child = [sys.executable, "-P", "-s", "-m", "agent.sandbox.child"]
    # under bwrap this is the environment it sets up inside (it starts from a clear one)
    env = _environment(result_w, progress_w, str(own_scratch or protocol.SCRATCH))
    try:
        if mode == "kernel":
            spec = protocol.SandboxSpec(job=job, memory_mb=limits.memory_mb)
            seccomp_r, seccomp_w = os.pipe()
            os.write(seccomp_w, isolation.seccomp_program())
            os.close(seccomp_w)
            fds.append(seccomp_r)
            argv = isolation.bwrap_command(
                child,
                workspace=workspace,
                inputs=inputs,
                scratch_mb=limits.scratch_mb,
                env=env,
                seccomp_fd=seccomp_r,
                proc=proc,
            )
            cwd = None
        else:
            assert own_scratch is not None
            spec = protocol.SandboxSpec(
                job=job,
                memory_mb=limits.memory_mb,
                workspace=str(workspace),
                inputs=str(inputs or own_scratch),
                scratch=str(own_scratch),
                guard_files=True,
            )
            argv = child
            cwd = own_scratch
        started = time.monotonic()
        run = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            preexec_fn=lambda: _limit_child(limits),
            pass_fds=tuple(fds),
        )
    finally:
        for fd in fds:
            os.close(fd)
    try:
        assert run.stdin is not None
        try:
            run.stdin.write(protocol.encode(spec))
            run.stdin.close()
        except BrokenPipeError:
            pass  # it ended before reading its job: the exit code says why
        output, reply_bytes, limit = _collect(
            run, result_r, progress_r, limits, started, on_progress
        )
    finally:
        os.close(result_r)
        os.close(progress_r)
        if own_scratch is not None:
            shutil.rmtree(own_scratch, ignore_errors=True)  # never follows links
    return _result(run.returncode, output, reply_bytes, limit, limits, time.monotonic() - started)


def _result(
    returncode: int,
    output: bytes,
    reply_bytes: bytes,
    limit: LimitName | None,
    limits: Limits,
    seconds: float,
) -> SandboxResult:
    text = output.decode(errors="replace")
    if limit == "output":
        error = f"output limit exceeded: more than {limits.output_bytes:,} bytes printed"
        return SandboxResult(False, text, error, "output", seconds=seconds)
    if limit == "wall_clock":
        error = f"wall-clock limit exceeded: still running after {limits.wall_s:g}s"
        return SandboxResult(False, text, error, "wall_clock", seconds=seconds)
    killed = {-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL}
    if returncode in killed and not reply_bytes:
        error = f"CPU time limit exceeded: more than {limits.cpu_s}s of CPU"
        return SandboxResult(False, text, error, "cpu", seconds=seconds)
    try:
        reply = protocol.decode_reply(reply_bytes) if reply_bytes else None
    except msgspec.DecodeError:
        reply = None
    if reply is None:
        error = f"the sandboxed process ended without a result (exit code {returncode})"
        return SandboxResult(False, text, error, seconds=seconds)
    if reply.outcome is not None:
        return SandboxResult(True, text, outcome=reply.outcome, seconds=seconds)
    if reply.failure == "memory":
        error = f"memory limit exceeded: more than {limits.memory_mb} MB"
        return SandboxResult(False, text, error, "memory", seconds=seconds)
    failure: LimitName | None = "policy" if reply.failure == "policy" else None
    return SandboxResult(False, text, reply.error or "the run failed", failure, seconds=seconds)


def _collect(
    proc: subprocess.Popen[bytes],
    result_fd: int,
    progress_fd: int,
    limits: Limits,
    started: float,
    on_progress: OnProgress | None,
) -> tuple[bytes, bytes, LimitName | None]:
    """Read output, progress and reply together until they end, a limit is hit, or time
    is up."""
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(out_fd, selectors.EVENT_READ)
    sel.register(result_fd, selectors.EVENT_READ)
    sel.register(progress_fd, selectors.EVENT_READ)
    chunks: list[bytes] = []
    reply: list[bytes] = []
    said = b""
    size = reply_size = 0
    limit: LimitName | None = None
    open_fds = {out_fd, result_fd, progress_fd}
    try:
        while open_fds and limit is None:
            left = limits.wall_s - (time.monotonic() - started)
            if left <= 0:
                limit = "wall_clock"
                break
            for key, _ in sel.select(timeout=left):
                fd = int(key.fd)
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    open_fds.discard(fd)
                elif fd == progress_fd:
                    *lines, said = (said + chunk).split(b"\n")
                    said = said[-64:]  # a line is short; more is not ours
                    heard = [p for p in map(protocol.parse_progress, lines) if p is not None]
                    if heard and on_progress is not None:
                        on_progress(*heard[-1])  # the latest is enough
                elif fd == result_fd:
                    reply_size += len(chunk)
                    if reply_size > protocol.MAX_REPLY_BYTES:
                        sel.unregister(fd)
                        open_fds.discard(fd)
                        reply = []  # too large to be a reply of ours
                    else:
                        reply.append(chunk)
                else:
                    size += len(chunk)
                    if size > limits.output_bytes:
                        chunks.append(chunk[: max(0, limits.output_bytes - (size - len(chunk)))])
                        limit = "output"
                        break
                    chunks.append(chunk)
    finally:
        sel.close()
        if limit is not None:
            _kill_group(proc)
        try:
            proc.wait(timeout=max(1.0, limits.wall_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            limit = limit or "wall_clock"
        _kill_group(proc)  # anything it left behind
        proc.stdout.close()
    return b"".join(chunks), b"".join(reply), limit


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def warn_if_unisolated(mode: Isolation) -> None:
    """Said at every start of an agent whose operator turned the kernel sandbox off."""
    if mode == "none":
        log.warning(
            "agent.sandbox.isolation is 'none': the person's code runs without the kernel "
            "sandbox and can read and reach whatever this agent can; only for a single-user "
            "machine"
        )
