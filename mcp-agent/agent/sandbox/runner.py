"""The parent side of the sandbox: start the child with limits, collect what it says.

Limits and how a breach shows:

* CPU time (``RLIMIT_CPU``): the kernel stops the child with SIGXCPU;
* memory (``RLIMIT_AS``): allocations fail with ``MemoryError``;
* wall clock: the child is killed when its time is up (a ``sleep`` uses no CPU);
* output: stdout and stderr together are cut at the limit and the child killed;
* file size (``RLIMIT_FSIZE``) and open files (``RLIMIT_NOFILE``) bound the scratch folder's use.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    cpu_s: int = 10
    memory_mb: int = 1024
    wall_s: float = 30.0
    output_bytes: int = 256_000
    file_mb: int = 100


@dataclass
class SandboxResult:
    """How a run ended. ``error`` names the limit or the exception when it failed."""

    ok: bool
    output: str = ""
    error: str | None = None
    #: the limit that was breached: cpu, memory, wall_clock, output, or None
    limit: str | None = None
    value: Any = None
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


_STARTUP_MB = 4096


def _limit_child(limits: Limits) -> None:
    os.setsid()  # its own process group, so everything it leaves is killed with it
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


def run_sandboxed(
    job: dict[str, Any],
    *,
    workspace: Path,
    scratch: Path,
    readable: list[Path] | None = None,
    limits: Limits = Limits(),
) -> SandboxResult:
    """Run ``job`` (see :mod:`agent.sandbox.child`) in a fresh limited process."""
    scratch.mkdir(parents=True, exist_ok=True)
    spec = {
        "job": job,
        "workspace": str(workspace),
        "scratch": str(scratch),
        "readable": [str(p) for p in readable or []],
        "memory_mb": limits.memory_mb,
    }
    result_r, result_w = os.pipe()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(scratch),
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(scratch / ".matplotlib"),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DEXORDER_SANDBOX_RESULT_FD": str(result_w),
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.sandbox.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=scratch,
        env={**env, "PYTHONPATH": os.pathsep + os.pathsep.join(_import_roots())},
        preexec_fn=lambda: _limit_child(limits),
        pass_fds=(result_w,),
    )
    os.close(result_w)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    output, limit = _collect(proc, limits, started)
    result_bytes = _read_all(result_r)
    seconds = time.monotonic() - started
    text = output.decode(errors="replace")
    if limit == "output":
        return SandboxResult(
            False,
            text,
            f"output limit exceeded: more than {limits.output_bytes:,} bytes printed",
            "output",
            seconds=seconds,
        )
    if limit == "wall_clock":
        return SandboxResult(
            False,
            text,
            f"wall-clock limit exceeded: still running after {limits.wall_s:g}s",
            "wall_clock",
            seconds=seconds,
        )
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not result_bytes:
        return SandboxResult(
            False,
            text,
            f"CPU time limit exceeded: more than {limits.cpu_s}s of CPU",
            "cpu",
            seconds=seconds,
        )
    try:
        reply = json.loads(result_bytes) if result_bytes else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return SandboxResult(
            False,
            text,
            f"the sandboxed process ended without a result (exit code {proc.returncode})",
            seconds=seconds,
        )
    if reply.get("limit") == "memory":
        reply["error"] = f"memory limit exceeded: more than {limits.memory_mb} MB"
    return SandboxResult(
        bool(reply.get("ok")),
        text,
        reply.get("error"),
        reply.get("limit"),
        reply.get("value"),
        seconds,
        list(reply.get("files", [])),
    )


def _collect(
    proc: subprocess.Popen[bytes], limits: Limits, started: float
) -> tuple[bytes, str | None]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    chunks: list[bytes] = []
    size = 0
    limit: str | None = None
    try:
        while True:
            left = limits.wall_s - (time.monotonic() - started)
            if left <= 0:
                limit = "wall_clock"
                break
            if not sel.select(timeout=left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
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
    return b"".join(chunks), limit


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _import_roots() -> list[str]:
    """Where the platform's own packages are (an editable install may not be on sys.path)."""
    import agent
    import dexorder

    return [str(Path(m.__file__).resolve().parents[1]) for m in (agent, dexorder) if m.__file__]
