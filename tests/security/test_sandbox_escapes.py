"""Threat: the person's own code (``run_python``, a strategy's or indicator's module body)
reaching the platform's secrets, another person's files, processes or the network.

Every attack here first switches the in-process audit hook off, as an attacker
would (its rules are plain module globals), so what holds is the kernel's
sandbox alone: namespaces, a read-only mount view, a fresh tmpfs scratch, a
seccomp filter. Each of these worked against the audit-hook sandbox.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agent.sandbox import Limits, SandboxResult, SandboxUnavailable, isolation, run_sandboxed
from agent.sandbox.protocol import PythonJob, PythonOutcome

LIMITS = Limits(cpu_s=5, memory_mb=512, wall_s=20, output_bytes=2_000_000, scratch_mb=8)

#: What an attacker runs first: clear the audit hook's rules from inside.
TAMPER = (
    "import agent.sandbox.guard as _g\n"
    "for _rules in (_g._NO_PROCESSES, _g._NO_NATIVE, _g._NO_LIMIT_CHANGES, _g._NO_NETWORK,\n"
    "               _g._WRITES, _g._LISTING):\n"
    "    _rules.clear()\n"
)

# skipped on a machine without the sandbox, never in CI (.ci/run installs bubblewrap)
pytestmark = pytest.mark.skipif(
    not isolation.status().available and not os.environ.get("CI"),
    reason=f"no kernel sandbox here: {isolation.status().reason}",
)


class Home:
    """A platform home with a secret, alice's workspace and bob's system prompt."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret = root / "state" / "agent_token_ed25519.pem"
        self.secret.parent.mkdir(parents=True)
        self.secret.write_text("-----BEGIN PRIVATE KEY----- PLATFORM-SECRET")
        self.workspace = root / "agents" / "alice" / "workspace"
        (self.workspace / "strategies").mkdir(parents=True)
        self.mine = self.workspace / "strategies" / "mine.py"
        self.mine.write_text("X = 1\n")
        self.bob_prompt = root / "agents" / "bob" / "workspace" / "instructions.md"
        self.bob_prompt.parent.mkdir(parents=True)
        self.bob_prompt.write_text("bob's own instructions")

    def run(self, code: str, limits: Limits = LIMITS) -> SandboxResult:
        return run_sandboxed(PythonJob(TAMPER + code), workspace=self.workspace, limits=limits)

    def result(self, code: str) -> object:
        r = self.run(code)
        assert r.ok and isinstance(r.outcome, PythonOutcome), (r.error, r.output)
        return json.loads(r.outcome.result_json)

    def untouched(self) -> None:
        assert self.mine.read_text() == "X = 1\n"
        assert self.bob_prompt.read_text() == "bob's own instructions"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


def test_tampering_with_the_guard_then_native_reads_find_no_secret(home: Home) -> None:
    """Guard rules cleared, then libc open/read through ctypes (no audit event at all)."""
    got = home.result(
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"fd = libc.open({str(home.secret).encode()!r}, 0)\n"
        "buf = ctypes.create_string_buffer(4096)\n"
        "n = libc.read(fd, buf, 4096) if fd >= 0 else -1\n"
        "result = [fd, buf.raw[:max(n, 0)].decode(errors='replace')]\n"
    )
    assert got == [-1, ""]


def test_pyarrow_and_polars_native_file_io_cannot_reach_secrets_or_write(home: Home) -> None:
    """pyarrow and polars read and write files in native code, unseen by an audit hook."""
    tries = {
        "pyarrow read": "import pyarrow.fs as fs\n"
        f"result = fs.LocalFileSystem().open_input_stream({str(home.secret)!r}).read().decode()",
        "pyarrow write": "import pyarrow.fs as fs\n"
        "fs.LocalFileSystem().open_output_stream('/workspace/strategies/mine.py').write(b'!')",
        "polars read": f"import polars as pl\nresult = pl.read_csv({str(home.secret)!r}).columns",
        "polars write": "import polars as pl\n"
        f"pl.DataFrame({{'a': [1]}}).write_csv({str(home.bob_prompt)!r})",
    }
    for attack, code in tries.items():
        r = home.run(code, Limits(cpu_s=5, memory_mb=1024, wall_s=20))
        assert not r.ok, attack
        assert "SECRET" not in (r.error or "") + r.output, attack
        assert any(
            said in (r.error or "")
            for said in ("No such file", "not found", "Read-only file system", "os error 2")
        ), (attack, r.error)
    home.untouched()


def test_dir_fd_after_chdir_cannot_write_the_workspace_or_read_outside(home: Home) -> None:
    """``os.open(rel, dir_fd=fd)`` after an unaudited chdir resolved differently for the hook."""
    got = home.result(
        "import os\n"
        "out = []\n"
        "ws = os.open('/workspace', os.O_RDONLY)\n"
        "os.chdir('/scratch')\n"
        "try:\n"
        "    fd = os.open('strategies/mine.py', os.O_WRONLY | os.O_TRUNC, dir_fd=ws)\n"
        "    os.write(fd, b'hacked'); out.append('wrote')\n"
        "except OSError as e:\n"
        "    out.append(e.errno)\n"
        "root = os.open('/', os.O_RDONLY)\n"
        "try:\n"
        f"    fd = os.open({str(home.secret)[1:]!r}, os.O_RDONLY, dir_fd=root)\n"
        "    out.append(os.read(fd, 99))\n"
        "except OSError as e:\n"
        "    out.append(e.errno)\n"
        "result = [str(x) for x in out]\n"
    )
    assert got == [str(30), str(2)]  # EROFS: the workspace is read-only; ENOENT: no home there
    home.untouched()


def test_starting_processes_is_refused_by_the_kernel(home: Home) -> None:
    """``_posixsubprocess.fork_exec`` (behind subprocess) and ``os.fork`` raise no audit event
    the old guard could see once its rules were cleared."""
    got = home.result(
        "import os, subprocess\n"
        "out = []\n"
        "try:\n"
        "    subprocess.run(['/usr/bin/id'])\n"
        "    out.append('ran')\n"
        "except OSError as e:\n"
        "    out.append(e.errno)\n"
        "try:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    out.append('forked')\n"
        "except OSError as e:\n"
        "    out.append(e.errno)\n"
        "result = out\n"
    )
    assert got == [1, 1]  # EPERM from the seccomp filter, both ways


def test_no_process_outlives_the_run(home: Home) -> None:
    """A grandchild that calls ``setsid`` used to outlive the run."""
    marker = f"survivor-{os.getpid()}-{id(home)}"
    r = home.run(
        "import os, time\n"
        "try:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        f"        os.execv('/usr/bin/sleep', ['sleep', '600', {marker!r}])\n"
        "except OSError:\n"
        "    pass\n"
        "result = 'done'\n"
    )
    assert r.ok, r.error
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert marker.encode() not in cmdline, f"process {pid} outlived the run"


def test_sitecustomize_in_scratch_does_not_run_next_time(home: Home) -> None:
    """Scratch persisted and sat on sys.path: a ``sitecustomize.py`` there ran unguarded."""
    first = home.result(
        "from pathlib import Path\n"
        "Path('/scratch/sitecustomize.py').write_text('print(\"PWNED\")')\n"
        "Path('/scratch/usercustomize.py').write_text('print(\"PWNED\")')\n"
        "result = sorted(p.name for p in Path('/scratch').iterdir())\n"
    )
    assert "sitecustomize.py" in first  # type: ignore[operator]
    r = home.run("import os\nresult = sorted(os.listdir('/scratch'))\n")
    assert r.ok and isinstance(r.outcome, PythonOutcome), r.error
    assert "PWNED" not in r.output
    assert "sitecustomize.py" not in json.loads(r.outcome.result_json)


def test_scratch_has_a_total_quota(home: Home) -> None:
    """Scratch had no total quota: many files, each under the file-size limit, filled the disk."""
    got = home.result(
        "import os\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(64):\n"
        "        with open(f'/scratch/f{i}', 'wb') as f:\n"
        "            f.write(b'x' * 1_000_000)\n"
        "        written += 1\n"
        "except OSError as e:\n"
        "    result = [written, e.errno]\n"
        "else:\n"
        "    result = [written, 0]\n"
    )
    assert isinstance(got, list) and got[1] == 28 and got[0] < 9  # ENOSPC at the 8 MB cap


def test_namespaces_mounts_ptrace_bpf_and_keyrings_are_denied(home: Home) -> None:
    """Calls that lead out of a namespace or into the kernel: each refused with EPERM."""
    got = home.result(
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def errno_of(ret):\n"
        "    return ctypes.get_errno() if ret == -1 else 0\n"
        "out = {}\n"
        "out['unshare'] = errno_of(libc.unshare(0x10000000))\n"
        "out['setns'] = errno_of(libc.setns(0, 0))\n"
        "out['mount'] = errno_of(libc.mount(b'none', b'/scratch', b'tmpfs', 0, None))\n"
        "out['ptrace'] = errno_of(libc.ptrace(16, 1, None, None))\n"
        "out['bpf'] = errno_of(libc.syscall(321, 0, None, 0))\n"
        "out['keyctl'] = errno_of(libc.syscall(250, 0, 0, 0, 0, 0))\n"
        "result = out\n"
    )
    assert got == {k: 1 for k in ("unshare", "setns", "mount", "ptrace", "bpf", "keyctl")}


def test_the_run_is_alone_unprivileged_and_offline(home: Home) -> None:
    """It used to see every process (their environments in /proc), run as root, and share
    the host's network."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        got = home.result(
            "import os, socket\n"
            "procs = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
            "caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    net = 'connected'\n"
            "except OSError as e:\n"
            "    net = e.errno\n"
            "result = [procs, os.getuid(), int(caps.split()[1], 16), net,\n"
            f"          os.path.exists({str(home.root)!r})]\n"
        )
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host's loopback
    seen = msgspec.convert(got, tuple[list[int], int, int, int | str, bool])
    procs, uid, caps, net, home_seen = seen
    assert max(procs) <= 3 and uid == 65534 and caps == 0
    assert net == 111 and home_seen is False  # its own loopback refuses; no home in view


def test_a_large_result_comes_back_whole(home: Home) -> None:
    """A reply over 64 KiB deadlocked the old pipe reading until the wall clock."""
    got = home.result("result = 'x' * 1_000_000\n")
    assert got == "x" * 1_000_000


def test_without_bubblewrap_user_code_is_refused_with_a_clear_error(
    home: Home, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where the sandbox cannot be set up, nothing runs unisolated unless the operator opts out."""
    isolation.status.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    try:
        st = isolation.status()
        assert not st.available and "bubblewrap" in st.reason
        with pytest.raises(SandboxUnavailable, match="sandbox is unavailable on this host"):
            run_sandboxed(PythonJob("result = 1"), workspace=home.workspace, limits=LIMITS)
        opted_out = run_sandboxed(
            PythonJob("result = 1"), workspace=home.workspace, limits=LIMITS, mode="none"
        )
        assert opted_out.ok, opted_out.error
    finally:
        isolation.status.cache_clear()


def test_status_says_why_people_s_code_is_refused(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """An operator learns from ``dexorder status`` that the sandbox cannot be set up, not
    from a person's failed tool call."""
    status = [sys.executable, "-m", "launcher", "status", "--json"]
    no_bwrap = {**os.environ, **isolated_env, "PATH": str(tmp_path)}
    said = subprocess.run(status, env=no_bwrap, capture_output=True, text=True, timeout=60)
    assert said.returncode == 1
    sandbox = json.loads(said.stdout)["sandbox"]
    assert sandbox["healthy"] is False and "bubblewrap" in sandbox["detail"]
    opted_out = {**no_bwrap, "DEXORDER_AGENT__SANDBOX__ISOLATION": "none"}
    said = subprocess.run(status, env=opted_out, capture_output=True, text=True, timeout=60)
    sandbox = json.loads(said.stdout)["sandbox"]
    assert sandbox["healthy"] is True and "single-user" in sandbox["detail"]


def test_without_proc_user_namespaces_are_still_refused(home: Home) -> None:
    """``agent.sandbox.proc: none`` (agent pods) also drops bwrap's ``--disable-userns``,
    which needs a writable /proc/sys: the seccomp filter alone must refuse a user namespace
    in each of its forms, and the run is still alone in its PID namespace, with no /proc."""
    import platform

    clone = {"x86_64": 56, "aarch64": 220}[platform.machine()]
    code = TAMPER + (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def errno_of(ret):\n"
        "    return ctypes.get_errno() if ret == -1 else 0\n"
        "out = {}\n"
        "out['unshare'] = errno_of(libc.unshare(0x10000000))\n"
        f"out['clone'] = errno_of(libc.syscall({clone}, 0x10000000 | 17, 0, 0, 0, 0))\n"
        "out['clone3'] = errno_of(libc.syscall(435, None, 0))\n"
        "out['setns'] = errno_of(libc.setns(0, 0))\n"
        "out['mount'] = errno_of(libc.mount(b'none', b'/scratch', b'tmpfs', 0, None))\n"
        "out['proc'] = os.path.exists('/proc')\n"
        "out['alone'] = os.getpid() <= 3 and os.getuid() == 65534\n"
        f"out['home'] = os.path.exists({str(home.root)!r})\n"
        "result = out\n"
    )
    r = run_sandboxed(PythonJob(code), workspace=home.workspace, limits=LIMITS, proc="none")
    assert r.ok and isinstance(r.outcome, PythonOutcome), (r.error, r.output)
    assert json.loads(r.outcome.result_json) == {
        "unshare": 1,
        "clone": 1,
        "clone3": 38,  # ENOSYS: the C library's cue to fall back to clone
        "setns": 1,
        "mount": 1,
        "proc": False,
        "alone": True,
        "home": False,
    }
