"""(g) The sandbox's start-up: from asking for a run to the first line of the person's code.

Measured both ways in the same run, 20 times each, alternating:

* baseline: a plain limited process (``agent.sandbox.isolation: none``, what the
  sandbox was before it was the kernel's: rlimits and the audit hook);
* kernel: bubblewrap namespaces + seccomp filter + tmpfs scratch (the default).

The figure the issue names is the p50 added by the isolation (target < 300 ms).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from agent.sandbox import Limits, isolation_status, run_sandboxed
from agent.sandbox.protocol import PythonJob, PythonOutcome
from agent.sandbox.runner import Isolation
from bench.common import pct, row

RUNS = 20
FIRST_LINE = PythonJob("import time\nresult = time.time()")


def _first_line_s(workspace: Path, mode: Isolation) -> tuple[float, float]:
    """Seconds to the first line of user code, and to the run's end."""
    started = time.time()
    r = run_sandboxed(FIRST_LINE, workspace=workspace, limits=Limits(), mode=mode)
    ended = time.time()
    if not r.ok or not isinstance(r.outcome, PythonOutcome):
        raise RuntimeError(f"sandbox run failed: {r.error}")
    first = float(r.outcome.result_json)
    return first - started, ended - started


def main() -> dict[str, float]:
    print("(g) sandbox start-up, request → first line of user code (p50 of 20)")
    status = isolation_status()
    if not status.available:
        print(f"  the kernel sandbox is unavailable here: {status.reason}")
        return {}
    times: dict[Isolation, list[float]] = {"none": [], "kernel": []}
    whole: dict[Isolation, list[float]] = {"none": [], "kernel": []}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        modes: tuple[Isolation, ...] = ("none", "kernel")
        for mode in modes:  # warm the page cache for both
            _first_line_s(workspace, mode)
        for _ in range(RUNS):
            for mode in modes:
                first, total = _first_line_s(workspace, mode)
                times[mode].append(first)
                whole[mode].append(total)
    base, kernel = pct(times["none"], 50) * 1000, pct(times["kernel"], 50) * 1000
    row("baseline (limited process, audit hook)", f"{base:.0f} ms", "p50")
    row("kernel sandbox (bubblewrap + seccomp)", f"{kernel:.0f} ms", "p50")
    row("added by the isolation", f"{kernel - base:.0f} ms", "target < 300 ms")
    row(
        "whole run, baseline → kernel",
        f"{pct(whole['kernel'], 50) * 1000:.0f} ms",
        f"baseline {pct(whole['none'], 50) * 1000:.0f} ms",
    )
    return {"base_ms": base, "kernel_ms": kernel, "added_ms": kernel - base}
