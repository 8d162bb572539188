"""Run by tests/knative/test_agent_seccomp.py inside a pod-like process (uid 10001, no
capabilities, no new privileges): load an OCI seccomp profile into the kernel as the
container runtime would, then try the agent's real sandbox and print what happened as JSON.

``python seccomp_child.py PROFILE.json WORKSPACE [PROC]``: PROC is ``agent.sandbox.proc``
("mount" unless given). With a folder ``inputs`` beside WORKSPACE holding ``candles.parquet``
(and ``strategies/sma_cross.py`` in WORKSPACE) a backtest runs too.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import pyseccomp as sc

_OPS = {
    "SCMP_CMP_NE": sc.NE,
    "SCMP_CMP_LT": sc.LT,
    "SCMP_CMP_LE": sc.LE,
    "SCMP_CMP_EQ": sc.EQ,
    "SCMP_CMP_GE": sc.GE,
    "SCMP_CMP_GT": sc.GT,
    "SCMP_CMP_MASKED_EQ": sc.MASKED_EQ,
}


def _action(name: str, errno_ret: int | None, default_errno: int) -> Any:
    if name == "SCMP_ACT_ALLOW":
        return sc.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return sc.ERRNO(errno_ret if errno_ret is not None else default_errno)
    raise ValueError(f"action {name} not used by our profiles")


def load_oci_profile(profile: dict[str, Any]) -> None:
    """Install ``profile`` as runc does (libseccomp; unknown call names skipped; several
    conditions on one argument become one rule each, the rest are ANDed)."""
    default_errno = profile.get("defaultErrnoRet", errno.EPERM)
    filt = sc.SyscallFilter(
        defaction=_action(profile["defaultAction"], default_errno, default_errno)
    )
    for rule in profile["syscalls"]:
        action = _action(rule["action"], rule.get("errnoRet"), default_errno)
        args = [
            sc.Arg(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in rule.get("args", [])
        ]
        indices = [a["index"] for a in rule.get("args", [])]
        groups = [[a] for a in args] if len(set(indices)) < len(indices) else [args]
        for name in rule["names"]:
            for group in groups:
                try:
                    filt.add_rule(action, name, *group)
                except (ValueError, RuntimeError, OSError):
                    # a call this libseccomp or architecture does not know (runc skips
                    # them too): nothing can make it here, so nothing to allow
                    continue
    filt.load()


#: As in tests/security/test_sandbox_escapes.py: the attacker first clears the in-process
#: audit hook's rules, so what holds below is the kernel's sandbox alone.
TAMPER = (
    "import agent.sandbox.guard as _g\n"
    "for _rules in (_g._NO_PROCESSES, _g._NO_NATIVE, _g._NO_LIMIT_CHANGES, _g._NO_NETWORK,\n"
    "               _g._WRITES, _g._LISTING):\n"
    "    _rules.clear()\n"
)

ESCAPES = TAMPER + (
    "import ctypes, os, json\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def errno_of(ret):\n"
    "    return ctypes.get_errno() if ret == -1 else 0\n"
    "out = {}\n"
    "out['unshare'] = errno_of(libc.unshare(0x10000000))\n"
    "out['mount'] = errno_of(libc.mount(b'none', b'/scratch', b'tmpfs', 0, None))\n"
    "try:\n"
    "    os.fork()\n"
    "    out['fork'] = 0\n"
    "except OSError as e:\n"
    "    out['fork'] = e.errno\n"
    "def alive(pid):\n"
    "    try:\n        os.kill(pid, 0)\n        return True\n"
    "    except ProcessLookupError:\n        return False\n"
    "    except PermissionError:\n        return True\n"
    "out['proc'] = os.path.exists('/proc')\n"
    "if out['proc']:\n"
    "    out['procs'] = max(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
    "else:  # no /proc to list: ask the kernel which ids exist in this namespace, less\n"
    "    # this process's own threads (tgkill to itself finds them)\n"
    "    mine = lambda tid: libc.tgkill(os.getpid(), tid, 0) == 0\n"
    "    out['procs'] = max(p for p in range(1, 4096) if alive(p) and not mine(p))\n"
    "out['agent_seen'] = alive(AGENT_PID)\n"
    "import numpy, pandas, talib\n"
    "out['sma'] = float(talib.SMA(numpy.arange(20.0), 5)[-1])\n"
    "out['frame'] = float(pandas.Series([1.0, 2.0]).sum())\n"
    "out['uid'] = os.getuid()\n"
    "out['home_seen'] = os.path.exists(HOME)\n"
    "out['workspace'] = open('/workspace/mine.py').read()\n"
    "result = out\n"
)


def main(profile_path: str, workspace: str, proc: Literal["mount", "none"]) -> None:
    load_oci_profile(json.loads(Path(profile_path).read_text()))
    from agent.sandbox import Limits, isolation, run_sandboxed
    from agent.sandbox.protocol import BacktestJob, BacktestOutcome, PythonJob, PythonOutcome

    status = isolation.status(proc)
    report: dict[str, Any] = {
        "available": status.available,
        "reason": status.reason,
        # whose ids the pod-like process has: "0 0 4294967295" on the host's
        "uid_map": Path("/proc/self/uid_map").read_text().split(),
    }
    if status.available:
        code = f"HOME = {str(Path(workspace).parent)!r}\nAGENT_PID = {os.getpid()}\n" + ESCAPES
        limits = Limits(cpu_s=5, memory_mb=512, wall_s=20, output_bytes=100_000, scratch_mb=8)
        r = run_sandboxed(PythonJob(code), workspace=Path(workspace), limits=limits, proc=proc)
        if r.ok and isinstance(r.outcome, PythonOutcome):
            report["run"] = json.loads(r.outcome.result_json)
        else:
            report["run_error"] = f"{r.error} {r.output}"
        inputs = Path(workspace).parent / "inputs"
        if inputs.is_dir():
            job = BacktestJob(
                strategy="sma_cross",
                candles="candles.parquet",
                bar_ms=3_600_000,
                filename="strategies/sma_cross.py",
            )
            r = run_sandboxed(
                job, workspace=Path(workspace), inputs=inputs, limits=limits, proc=proc
            )
            done = r.ok and isinstance(r.outcome, BacktestOutcome)
            report["backtest"] = "ran" if done else f"{r.error} {r.output}"
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "none" if sys.argv[3:] == ["none"] else "mount")
