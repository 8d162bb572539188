"""The kernel's sandbox: a bubblewrap command line and a seccomp filter for one run.

Why bubblewrap: it is Debian's, small, and made for exactly this (Flatpak runs
untrusted code with it); it sets up user, mount, PID, network, IPC and UTS
namespaces without privileges and takes a seccomp program from us. A bare
``unshare`` would leave the mount plumbing (read-only binds, a size-capped
tmpfs, a fresh ``/proc``) to hand-written code.

Each run sees:

* ``/usr`` (and its ``/bin``, ``/lib`` links), the Python installation and the
  platform's own ``agent`` and ``dexorder`` packages, all read-only;
* the person's workspace read-only at ``/workspace``, the run's inputs (candle
  files the agent wrote for it) read-only at ``/inputs``;
* a fresh, empty, size-capped tmpfs at ``/scratch`` (also ``/tmp``), gone when
  the run ends — nothing the sandbox writes outlives it or reaches the disk;
* its own ``/proc`` (a new PID namespace: it sees only itself), no network
  interfaces but its own loopback, uid 65534, no capabilities, no new
  privileges, and no way to make user namespaces.

With ``proc="none"`` (``agent.sandbox.proc``) the run has no ``/proc`` at all:
inside a container whose runtime made ``/proc/sys`` read-only the kernel refuses
a fresh proc mount, and showing the container's own ``/proc`` would show the
agent's process. The PID namespace stays; only the view of it is gone. bwrap's
``--disable-userns`` goes too: it writes ``user.max_user_namespaces`` through that
same read-only ``/proc/sys``. What refuses a user namespace then is the seccomp
filter alone (``unshare``, ``setns``, ``clone`` with any namespace flag, ``clone3``),
installed before the person's first instruction, as it is in "mount" mode too.

The seccomp filter (libseccomp through ``pyseccomp``) refuses new processes
(``clone`` without ``CLONE_THREAD``, ``fork``, ``vfork``; threads are fine),
namespace and mount changes, ``ptrace``, ``bpf``, keyrings, kernel modules and
other calls no analysis code needs. With no second process there is nothing to
outlive the run; the PID namespace ends whatever is left when bwrap is killed.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.sandbox.protocol import INPUTS, SCRATCH, WORKSPACE
from dexorder import namespaces

#: The uid and gid the person's code runs as inside its user namespace.
SANDBOX_UID = 65534

#: "mount": a fresh ``/proc`` in each run; "none": no ``/proc`` (``agent.sandbox.proc``).
ProcMount = Literal["mount", "none"]

_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

#: Calls refused with EPERM: no analysis code needs them, and each is a way out
#: of a namespace or into the kernel's attack surface.
DENIED_SYSCALLS = (
    "fork",
    "vfork",
    "setns",
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "setdomainname",
    "sethostname",
    "settimeofday",
    "clock_settime",
    "iopl",
    "ioperm",
)


class IsolationUnavailable(RuntimeError):
    """The kernel sandbox cannot be set up on this host; the message says why."""


@dataclass(frozen=True)
class IsolationStatus:
    available: bool
    reason: str = ""


@functools.cache
def seccomp_program() -> bytes:
    """The compiled BPF filter bwrap installs right before it starts Python (compiled once
    per process)."""
    import pyseccomp as sc  # loads libseccomp.so.2 with ctypes

    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError):
            continue  # not a call on this architecture
    # a new process is a clone without CLONE_THREAD; threads stay possible
    filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    for flag in _CLONE_NAMESPACES:
        filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, where seccomp cannot look: say it does not
    # exist, and the C library falls back to clone for threads
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb") as out:
            filt.export_bpf(out)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    return b"".join(chunks)


def import_roots() -> list[str]:
    """Folders holding the platform's own packages (an editable install is not in site-packages)."""
    import agent
    import dexorder

    return [str(Path(m.__file__).resolve().parents[1]) for m in (agent, dexorder) if m.__file__]


def bwrap_command(
    command: Sequence[str],
    *,
    workspace: Path,
    inputs: Path | None,
    scratch_mb: int,
    env: Mapping[str, str],
    seccomp_fd: int,
    proc: ProcMount = "mount",
) -> list[str]:
    """The bwrap argv that runs ``command`` in a fresh sandbox."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise IsolationUnavailable("bubblewrap (bwrap) is not installed")
    args = [
        bwrap,
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        # sets user.max_user_namespaces through the /proc/sys the runtime made read-only
        # where proc is "none": there the filter alone refuses user namespaces
        *(["--disable-userns"] if proc == "mount" else []),
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        *namespaces.system_binds(),
        *(["--proc", "/proc"] if proc == "mount" else []),
        "--dev",
        "/dev",
        "--perms",
        "0700",
        "--size",
        str(scratch_mb * 1024 * 1024),
        "--tmpfs",
        SCRATCH,
        "--symlink",
        SCRATCH,
        "/tmp",
        "--ro-bind",
        str(workspace),
        WORKSPACE,
    ]
    for root in namespaces.code_roots(("agent", "dexorder")):
        args += ["--ro-bind", root, root]
    if inputs is not None:
        args += ["--ro-bind", str(inputs), INPUTS]
    args += ["--chdir", SCRATCH, "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--seccomp", str(seccomp_fd), "--", *command]
    return args


#: The probe run: its fork must be refused (the filter is on) as uid 65534 in a PID namespace.
_PROBE = (
    "import os\n"
    "try:\n    os.fork()\nexcept PermissionError:\n"
    "    print('contained' if os.getuid() == 65534 and os.getpid() <= 3 else 'not contained')\n"
    "else:\n    print('not contained')\n"
)


@functools.cache
def status(proc: ProcMount = "mount") -> IsolationStatus:
    """Whether a sandbox can be set up here: one real (tiny) run, once per process and
    ``proc`` setting."""
    try:
        bpf = seccomp_program()
    except (ImportError, OSError, RuntimeError) as exc:
        return IsolationStatus(False, f"the seccomp library (libseccomp) is unavailable: {exc}")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, bpf)
        os.close(write_end)
        write_end = -1
        scratch = Path(os.path.realpath(sys.prefix))
        argv = bwrap_command(
            [sys.executable, "-S", "-c", _PROBE],
            workspace=scratch,
            inputs=None,
            scratch_mb=1,
            env={"PATH": "/usr/bin:/bin"},
            seccomp_fd=read_end,
            proc=proc,
        )
        done = subprocess.run(argv, pass_fds=(read_end,), capture_output=True, timeout=30)
    except IsolationUnavailable as exc:
        return IsolationStatus(False, str(exc))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return IsolationStatus(False, f"bubblewrap did not start: {exc}")
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if done.returncode != 0 or done.stdout.strip() != b"contained":
        said = (done.stderr or done.stdout).decode(errors="replace").strip()
        detail = said[-300:] or f"exit code {done.returncode}"
        return IsolationStatus(False, f"bubblewrap could not set up a sandbox: {detail}")
    return IsolationStatus(True)
