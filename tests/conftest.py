"""Shared fixtures: an isolated platform home on free ports, and the real platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.ephemeral import (
    RunningPlatform,
    ephemeral_env,
    free_port,
    in_environment,
    start_platform,
)


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A platform configuration under a temporary home, in effect for this test."""
    env = ephemeral_env(
        tmp_path / "home",
        DEXORDER_STREAM__CHECKPOINT_INTERVAL_MS="200",
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DEXORDER_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    return env


@pytest.fixture
def platform(isolated_env: dict[str, str]) -> Iterator[RunningPlatform]:
    """The whole platform on one machine, as `dexorder up` runs it."""
    p = start_platform(isolated_env)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def relay(isolated_env: dict[str, str]) -> Iterator[RunningPlatform]:
    """The relay alone, as `dexorder up` runs it."""
    p = start_platform(isolated_env, only={"relay"})
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def shared_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One platform for a whole test module (tests must not disturb each other's data)."""
    env = ephemeral_env(tmp_path_factory.mktemp("shared") / "home")
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS",)):
        p = start_platform(env)
        try:
            yield p
        finally:
            p.stop()


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The embedding service, model loaded (once per run); yields its URL and the home whose
    token key it trusts."""
    home = tmp_path_factory.mktemp("embedder") / "home"
    port = free_port()
    env = {**os.environ, "DEXORDER_HOME": str(home), "DEXORDER_EMBEDDER__PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.embedder"], env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the embedder exited"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                    if json.loads(r.read())["ready"]:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the embedder did not load its model in 120s")
        yield url, home
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[str]:
    """A fresh Tansu broker (in memory) on a free port; yields its bootstrap address."""
    from launcher.broker import start_broker, wait_listening

    port = free_port()
    proc = start_broker(port, tmp_path / "tansu.log")
    try:
        wait_listening(proc, port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
