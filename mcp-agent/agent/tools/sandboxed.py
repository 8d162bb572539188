"""Running a job in the person's code sandbox, and the folder of one run's input files."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mcp.server.mcpserver.exceptions import ToolError

from agent.person import PersonAgent
from agent.sandbox import SandboxResult, SandboxUnavailable, run_sandboxed
from agent.sandbox.protocol import Job
from agent.sandbox.runner import OnProgress
from dexorder import telemetry


@contextlib.contextmanager
def run_inputs(person: PersonAgent) -> Iterator[Path]:
    """A fresh folder for one run's input files: the sandbox sees it read-only, and it is
    gone when the run is."""
    path = Path(tempfile.mkdtemp(dir=person.run_inputs))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _sandbox(
    person: PersonAgent,
    job: Job,
    inputs: Path | None = None,
    on_progress: OnProgress | None = None,
) -> SandboxResult:
    try:
        kind = str(type(job).__struct_config__.tag)  # python, validate, backtest
        with telemetry.span(f"sandbox {kind}", {"dexorder.sandbox.mode": person.sandbox_mode}):
            return await asyncio.to_thread(
                run_sandboxed,
                job,
                workspace=person.workspace.root,
                inputs=inputs,
                limits=person.limits,
                mode=person.sandbox_mode,
                proc=person.sandbox_proc,
                on_progress=on_progress,
            )
    except SandboxUnavailable as exc:
        raise ToolError(str(exc)) from None
