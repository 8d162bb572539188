"""Inside the sandboxed process: an audit hook that refuses, with a clear message, what
code there may not do.

This is a second layer only: CPython's audit hooks can be stepped around (native
code in libraries, unaudited calls), so the containment is the kernel's (see
:mod:`agent.sandbox.isolation`) and nothing depends on this hook. What it adds
is a message a person understands ("network access is not allowed") where the
kernel would say "Operation not permitted".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_NO_PROCESSES = {
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.spawn",
    "os.exec",
    "os.system",
    "os.kill",
    "os.killpg",
    "subprocess.Popen",
    "pty.spawn",
}
_NO_NATIVE = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function"}
_NO_LIMIT_CHANGES = {
    "resource.setrlimit",
    "resource.prlimit",
    "os.setuid",
    "os.setgid",
    "os.chroot",
}
_NO_NETWORK = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"}
_WRITES = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
}
_LISTING = {"os.listdir", "os.scandir", "glob.glob"}


#: Read-only system data every process needs (time zones for UTC timestamps).
SYSTEM_READABLE = ("/usr/share/zoneinfo", "/etc/localtime", "/dev/null", "/dev/urandom")


class SandboxViolation(PermissionError):
    """Something the sandbox does not allow; the message says what."""


def install(readable: Iterable[Path], writable: Path, *, files: bool = True) -> None:
    """Refuse processes, native code, network, and (``files``) file access outside the
    given roots. Under the kernel sandbox the mount namespace is the file policy, so
    ``files`` is off there: the hook would only refuse harmless reads (``/proc/self``)."""
    write_root = os.path.realpath(writable)
    read_roots = tuple(
        {os.path.realpath(p) for p in readable}
        | {write_root}
        | {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        | {os.path.realpath(p) for p in sys.path if p}
        | {os.path.realpath(p) for p in SYSTEM_READABLE}
    )

    def inside(path: str, roots: tuple[str, ...]) -> bool:
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r + os.sep) for r in roots)

    def path_of(arg: Any) -> str | None:
        if isinstance(arg, int):
            return None  # an already open descriptor
        if isinstance(arg, bytes):
            return arg.decode(errors="replace")
        if isinstance(arg, str | os.PathLike):
            return str(os.fspath(arg))
        return None

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _NO_PROCESSES:
            raise SandboxViolation(
                "starting processes is not allowed in the sandbox (process limit)"
            )
        if event in _NO_NETWORK:
            raise SandboxViolation("network access is not allowed in the sandbox")
        if event in _NO_LIMIT_CHANGES:
            raise SandboxViolation("changing the sandbox's limits is not allowed")
        if event in _NO_NATIVE:
            raise SandboxViolation("loading native code is not allowed in the sandbox")
        if not files:
            return
        if event == "open":
            path = path_of(args[0])
            if path is None:
                return
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or bool(
                flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
            )
            if writing and not inside(path, (write_root,)):
                raise SandboxViolation(
                    f"writing {path} is not allowed: only the scratch folder is writable"
                )
            if not inside(path, read_roots):
                raise SandboxViolation(
                    f"reading {path} is not allowed: only the workspace and scratch are readable"
                )
        elif event in _WRITES:
            for arg in args:
                path = path_of(arg)
                if path is not None and not inside(path, (write_root,)):
                    raise SandboxViolation(
                        f"changing {path} is not allowed: only the scratch folder is writable"
                    )
        elif event in _LISTING:
            path = path_of(args[0]) if args else None
            if path is not None and not inside(path, read_roots):
                raise SandboxViolation(f"listing {path} is not allowed")

    sys.addaudithook(hook)
