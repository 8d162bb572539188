"""A platform part run alone as a subprocess (``python -m <module>``), and its ``/healthz``
figures: for the tests that SIGKILL a part mid-stream and start it again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request


def health(port: str) -> dict[str, int]:
    """The part's ``/healthz`` figures on ``port``; {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            data: dict[str, int] = json.loads(r.read())
            return data
    except OSError:
        return {}


async def start_part(
    module: str, env: dict[str, str], health_port: str, name: str
) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` with ``env``; wait (30 s at most) until it says it is healthy
    on ``health_port``. ``name`` says which part failed ("the writer")."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        assert proc.poll() is None, f"{name} exited"
        if health(health_port).get("healthy"):
            return proc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not become ready")
