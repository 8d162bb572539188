"""Helpers shared by the benchmarks: free ports, the embedded broker, percentiles."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dexorder.kafka import ensure_topics
from launcher.broker import start_broker, wait_listening
from launcher.ephemeral import free_port

__all__ = ["broker", "free_port", "pct", "row", "topics"]


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """A fresh Tansu broker on a free port; yields its bootstrap address."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc: subprocess.Popen[bytes] = start_broker(port, Path(tmp) / "tansu.log")
        try:
            wait_listening(proc, port)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


async def topics(bootstrap: str) -> None:
    await ensure_topics(bootstrap)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<48} {value:>16}  {note}", flush=True)
