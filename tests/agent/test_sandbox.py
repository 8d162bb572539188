"""run_python's sandbox: every escape attempt contained, with an error naming the limit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agent.sandbox import Limits, SandboxResult, run_sandboxed
from agent.sandbox.protocol import PythonJob, PythonOutcome

LIMITS = Limits(cpu_s=2, memory_mb=512, wall_s=6, output_bytes=20_000)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    workspace = tmp_path / "alice" / "workspace"
    (workspace / "strategies").mkdir(parents=True)
    (workspace / "strategies" / "mine.py").write_text("X = 1\n")
    other = tmp_path / "bob" / "workspace"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("bob's secret")
    return workspace, tmp_path / "alice" / "scratch"


def sandboxed(dirs: tuple[Path, Path], code: str) -> SandboxResult:
    return run_sandboxed(PythonJob(code), workspace=dirs[0], limits=LIMITS)


def outcome(r: SandboxResult) -> PythonOutcome:
    assert r.ok and isinstance(r.outcome, PythonOutcome), r.error
    return r.outcome


def test_code_runs_and_returns_its_result(dirs: tuple[Path, Path]) -> None:
    r = sandboxed(dirs, "import numpy as np\nprint('hi')\nresult = float(np.arange(5).sum())")
    assert (json.loads(outcome(r).result_json), r.output) == (10.0, "hi\n")


def test_the_workspace_is_readable_and_scratch_writable(dirs: tuple[Path, Path]) -> None:
    code = (
        "text = (workspace / 'strategies' / 'mine.py').read_text()\n"
        "(scratch / 'out.txt').write_text(text)\n"
        "result = text"
    )
    done = outcome(sandboxed(dirs, code))
    assert json.loads(done.result_json) == "X = 1\n" and done.files == ["out.txt"]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (
            "import socket\nsocket.create_connection(('127.0.0.1', 5432))",
            "network access is not allowed",
        ),
        (
            "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1/')",
            "network access is not allowed",
        ),
        ("open('/etc/passwd').read()", "No such file or directory: '/etc/passwd'"),
        (
            "open(workspace.parent.parent / 'bob' / 'workspace' / 'secret.txt').read()",
            "No such file or directory",
        ),
        ("import os\nos.listdir(workspace.parent.parent / 'bob')", "No such file or directory"),
        (
            "open(workspace / 'strategies' / 'mine.py', 'w').write('hacked')",
            "Read-only file system",
        ),
        (
            "import os\nos.remove(workspace / 'strategies' / 'mine.py')",
            "Read-only file system",
        ),
        ("import os\nwhile True:\n    os.fork()", "starting processes is not allowed"),
        ("import subprocess\nsubprocess.run(['id'])", "starting processes is not allowed"),
        ("import os\nos.system('id')", "starting processes is not allowed"),
        ("import ctypes\nctypes.CDLL(None).system(b'id')", "loading native code is not allowed"),
        (
            "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (999, 999))",
            "changing the sandbox's limits",
        ),
    ],
)
def test_escapes_are_refused(dirs: tuple[Path, Path], code: str, error: str) -> None:
    # CPU time to spare: the child's start-up imports alone came near 2 s of CPU on a
    # loaded 2-core machine, and the refusal, not the CPU limit, is what is tested here
    r = run_sandboxed(PythonJob(code), workspace=dirs[0], limits=replace(LIMITS, cpu_s=20))
    assert not r.ok
    assert r.error is not None and error in r.error
    assert (dirs[0] / "strategies" / "mine.py").read_text() == "X = 1\n"


def test_a_memory_bomb_hits_the_memory_limit(dirs: tuple[Path, Path]) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))"
    # CPU time to spare: zeroing pages under a busy machine's memory pressure is not free
    r = run_sandboxed(PythonJob(code), workspace=dirs[0], limits=replace(LIMITS, cpu_s=20))
    assert not r.ok and r.limit == "memory", r.error
    assert r.error == "memory limit exceeded: more than 512 MB"


def test_an_endless_loop_hits_the_cpu_limit(dirs: tuple[Path, Path]) -> None:
    r = sandboxed(dirs, "while True:\n    pass")
    assert not r.ok and r.limit == "cpu"
    assert "CPU time limit exceeded: more than 2s" in (r.error or "")


def test_sleeping_forever_hits_the_wall_clock(dirs: tuple[Path, Path]) -> None:
    r = sandboxed(dirs, "import time\ntime.sleep(3600)")
    assert not r.ok and r.limit == "wall_clock"
    assert "wall-clock limit exceeded: still running after 6s" in (r.error or "")


def test_a_flood_of_output_is_cut(dirs: tuple[Path, Path]) -> None:
    r = sandboxed(dirs, "while True:\n    print('x' * 1000)")
    assert not r.ok and r.limit == "output"
    assert len(r.output) <= 20_000 and "more than 20,000 bytes printed" in (r.error or "")


def test_an_error_names_the_line(dirs: tuple[Path, Path]) -> None:
    r = sandboxed(dirs, "a = 1\nb = 0\nc = a / b\n")
    assert not r.ok and r.error == "line 3: ZeroDivisionError: division by zero"


def test_a_sweep_tells_how_many_combinations_ran(tmp_path: Path) -> None:
    import shutil

    from agent.sandbox.protocol import BacktestJob, SweepOutcome
    from agent.sdk import sample_candles
    from agent.workspace import EXAMPLES

    workspace, inputs = tmp_path / "workspace", tmp_path / "inputs"
    (workspace / "strategies").mkdir(parents=True)
    inputs.mkdir()
    shutil.copy(EXAMPLES / "strategies" / "sma_cross.py", workspace / "strategies")
    sample_candles().to_parquet(inputs / "candles.parquet")
    job = BacktestJob(
        strategy="sma_cross",
        candles="candles.parquet",
        bar_ms=3_600_000,
        filename="strategies/sma_cross.py",
        params={"fast": [5, 10, 15], "slow": 30},
    )
    heard: list[tuple[int, int]] = []
    r = run_sandboxed(
        job,
        workspace=workspace,
        inputs=inputs,
        limits=replace(LIMITS, wall_s=30, cpu_s=10),
        on_progress=lambda done, total: heard.append((done, total)),
    )
    assert r.ok and isinstance(r.outcome, SweepOutcome), r.error
    # from the run itself, as it went (reads may join lines: the latest of each is told)
    assert heard and heard[-1] == (3, 3), heard
    assert heard == sorted(heard) and all(total == 3 for _, total in heard)


# --- agent.sandbox.proc: none (a pod whose runtime refuses a fresh /proc mount) -----------


def test_without_proc_bwrap_gets_no_proc_mount_but_keeps_its_pid_namespace(
    dirs: tuple[Path, Path],
) -> None:
    from agent.sandbox import isolation

    args = isolation.bwrap_command(
        ["python"], workspace=dirs[0], inputs=None, scratch_mb=1, env={}, seccomp_fd=3, proc="none"
    )
    assert "--proc" not in args and "--unshare-pid" in args and "--dev" in args
    # it would write user.max_user_namespaces through /proc/sys: the filter refuses them
    assert "--disable-userns" not in args and "--seccomp" in args
    mounted = isolation.bwrap_command(
        ["python"], workspace=dirs[0], inputs=None, scratch_mb=1, env={}, seccomp_fd=3
    )
    assert mounted[mounted.index("--proc") + 1] == "/proc"  # the default stays "mount"
    assert "--disable-userns" in mounted


def test_without_proc_the_sandbox_runs_the_libraries_and_keeps_the_memory_limit(
    dirs: tuple[Path, Path],
) -> None:
    """The child's libraries start without /proc, and its memory limit (measured from
    /proc/self/statm where there is one) is found by probing RLIMIT_AS: 600 MB more is
    refused under a 512 MB limit, 200 MB is not."""
    code = (
        "import os, numpy as np, pandas as pd, talib\n"
        "sma = float(talib.SMA(np.arange(20.0), 5)[-1])\n"
        "frame = pd.DataFrame({'x': np.arange(4.0)}).x.sum()\n"
        "try:\n    bytearray(600_000_000)\n    big = 'allowed'\n"
        "except MemoryError:\n    big = 'refused'\n"
        "small = len(bytearray(200_000_000))\n"
        "result = [os.path.exists('/proc'), os.getuid(), os.getpid() <= 3, sma, float(frame),"
        " big, small]\n"
    )
    r = run_sandboxed(
        PythonJob(code), workspace=dirs[0], limits=replace(LIMITS, cpu_s=20), proc="none"
    )
    got = json.loads(outcome(r).result_json)
    assert got == [False, 65534, True, 17.0, 6.0, "refused", 200_000_000]


def test_without_proc_a_backtest_and_an_indicator_run(tmp_path: Path) -> None:
    import shutil

    from agent.sandbox.protocol import BacktestJob, BacktestOutcome, IndicatorJob, IndicatorOutcome
    from agent.sdk import sample_candles
    from agent.workspace import EXAMPLES

    workspace, inputs = tmp_path / "workspace", tmp_path / "inputs"
    for kind, name in (("strategies", "sma_cross.py"), ("indicators", "rsi.py")):
        (workspace / kind).mkdir(parents=True)
        shutil.copy(EXAMPLES / kind / name, workspace / kind)
    inputs.mkdir()
    sample_candles().to_parquet(inputs / "candles.parquet")
    limits = replace(LIMITS, wall_s=30, cpu_s=20)
    backtest = BacktestJob(
        strategy="sma_cross",
        candles="candles.parquet",
        bar_ms=3_600_000,
        filename="strategies/sma_cross.py",
    )
    r = run_sandboxed(backtest, workspace=workspace, inputs=inputs, limits=limits, proc="none")
    assert r.ok and isinstance(r.outcome, BacktestOutcome), r.error
    indicator = IndicatorJob(name="rsi", candles="candles.parquet", filename="indicators/rsi.py")
    r = run_sandboxed(indicator, workspace=workspace, inputs=inputs, limits=limits, proc="none")
    assert r.ok and isinstance(r.outcome, IndicatorOutcome), r.error
    assert r.outcome.lines


def test_status_checks_the_sandbox_with_the_configured_proc(tmp_path: Path) -> None:
    from dexorder.config import Settings
    from launcher import sandbox_check

    cfg = Settings(home=tmp_path, agent={"sandbox": {"proc": "none"}})
    assert sandbox_check.check(cfg) == (
        True,
        "people's code runs in its own namespaces, without /proc",
    )
