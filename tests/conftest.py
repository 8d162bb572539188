"""Shared fixtures: an isolated platform home on free ports, and the real platform."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform


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
