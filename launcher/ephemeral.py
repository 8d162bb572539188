"""A throwaway platform on free loopback ports, for tests, benchmarks and demos."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dexorder.config import Settings, load_config
from dexorder.process import free_port
from launcher.parts import Part, plan
from launcher.supervisor import Supervisor

__all__ = ["RunningPlatform", "ephemeral_env", "free_port", "in_environment", "start_platform"]


def ephemeral_env(home: Path, **overrides: str) -> dict[str, str]:
    """Environment variables for a platform under ``home`` on free ports.

    The simulated market is quiet (``trade_rate`` 0) so that only the trades a
    caller makes happen; pass overrides to change any setting.
    """
    env = {
        "DEXORDER_HOME": str(home),
        "DEXORDER_KAFKA__EMBEDDED_PORT": str(free_port()),
        "DEXORDER_EMULATOR__PORT": str(free_port()),
        "DEXORDER_EMULATOR__TRADE_RATE": "0",
        "DEXORDER_RELAY__ROUTER_PORT": str(free_port()),
        "DEXORDER_RELAY__WORK_PORT": str(free_port()),
        "DEXORDER_RELAY__XSUB_PORT": str(free_port()),
        "DEXORDER_RELAY__XPUB_PORT": str(free_port()),
        "DEXORDER_RELAY__HEALTH_PORT": str(free_port()),
        "DEXORDER_STREAM__HEALTH_PORT": str(free_port()),
        "DEXORDER_WRITER__HEALTH_PORT": str(free_port()),
        "DEXORDER_EMBEDDER__PORT": str(free_port()),
        # the model takes ~0.7 GB and seconds of CPU: only for those who ask for it
        "DEXORDER_EMBEDDER__ENABLED": "false",
        "DEXORDER_GATEWAY__PORT": str(free_port()),
        "DEXORDER_GATEWAY__EVENTS_PORT": str(free_port()),
        "DEXORDER_GATEWAY__TRIGGERS_HEALTH_PORT": str(free_port()),
        # started by the tests that talk to it
        "DEXORDER_GATEWAY__ENABLED": "false",
        "DEXORDER_EXCHANGES": json.dumps(
            [{"health_port": free_port(), "symbols": ["BTC/USDT", "ETH/USDT"]}]
        ),
    }
    env.update(overrides)
    return env


@contextlib.contextmanager
def in_environment(env: dict[str, str], drop: tuple[str, ...] = ()) -> Iterator[None]:
    """``env`` set (and ``drop`` unset) in this process's environment while the block runs."""
    saved = {k: os.environ.get(k) for k in [*env, *drop]}
    os.environ.update(env)
    for k in drop:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class RunningPlatform:
    """A started platform: its settings, its children's environment, its supervisor."""

    cfg: Settings
    env: dict[str, str]
    supervisor: Supervisor

    @property
    def bootstrap(self) -> str:
        return self.env["DEXORDER_KAFKA__BOOTSTRAP_SERVERS"]

    def part(self, name: str) -> Part:
        return next(r.part for r in self.supervisor.running if r.part.name == name)

    def stop(self) -> None:
        self.supervisor.stop()


def start_platform(env: dict[str, str], only: set[str] | None = None) -> RunningPlatform:
    """Start the platform's real processes (all, or the parts named in ``only``).

    ``env`` must already be in effect for this process (it is read by
    :func:`load_config`); it is passed on to the children as well.
    """
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
