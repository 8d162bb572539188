"""Shared fixtures: free ports, an isolated platform home, the real broker and parts."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dexorder.config import Settings, load_config
from launcher.parts import Part, plan
from launcher.supervisor import Supervisor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def platform_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for an isolated platform on free ports under ``home``."""
    env = {
        "DEXORDER_HOME": str(home),
        "DEXORDER_LOG_LEVEL": "info",
        "DEXORDER_KAFKA__EMBEDDED_PORT": str(free_port()),
        "DEXORDER_EMULATOR__PORT": str(free_port()),
        "DEXORDER_EMULATOR__TRADE_RATE": "0",
        "DEXORDER_RELAY__ROUTER_PORT": str(free_port()),
        "DEXORDER_RELAY__WORK_PORT": str(free_port()),
        "DEXORDER_RELAY__XSUB_PORT": str(free_port()),
        "DEXORDER_RELAY__XPUB_PORT": str(free_port()),
        "DEXORDER_RELAY__HEALTH_PORT": str(free_port()),
        "DEXORDER_STREAM__HEALTH_PORT": str(free_port()),
        "DEXORDER_STREAM__CHECKPOINT_INTERVAL_MS": "200",
        "DEXORDER_STREAM__LIVE_UPDATE_INTERVAL_MS": "50",
        "DEXORDER_EXCHANGES": json.dumps(
            [{"health_port": free_port(), "symbols": ["BTC/USDT", "ETH/USDT"]}]
        ),
    }
    env.update(extra)
    return env


@dataclass
class RunningPlatform:
    cfg: Settings
    env: dict[str, str]
    supervisor: Supervisor

    @property
    def bootstrap(self) -> str:
        return self.env["DEXORDER_KAFKA__BOOTSTRAP_SERVERS"]

    def part(self, name: str) -> Part:
        return next(r.part for r in self.supervisor.running if r.part.name == name)


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = platform_env(tmp_path / "home")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    return env


def start_platform(env: dict[str, str], only: set[str] | None = None) -> RunningPlatform:
    """Start the platform's real processes (all, or the parts named in ``only``)."""
    cfg = load_config()
    child_env = {
        **os.environ,
        **env,
        "DEXORDER_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{cfg.kafka.embedded_port}",
    }
    parts = [p for p in plan(cfg) if only is None or p.name in only]
    sup = Supervisor(cfg, parts, child_env, say=lambda _: None)
    sup.start()
    return RunningPlatform(cfg, child_env, sup)


@pytest.fixture
def platform(isolated_env: dict[str, str]) -> Iterator[RunningPlatform]:
    """The whole platform on one machine, as `dexorder up` runs it."""
    p = start_platform(isolated_env)
    try:
        yield p
    finally:
        p.supervisor.stop()
