"""A platform run as `dexorder up` runs it: started, and watched by its supervisor, which
restarts a part that dies (and the users of the in-memory broker with it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform
from launcher.supervisor import PartFailed
from tests.integration.test_realtime_path import trade


@contextlib.contextmanager
def supervised_platform(home: Path, **overrides: str) -> Iterator[RunningPlatform]:
    """The whole platform under ``home``, with the supervisor's watch loop running."""
    env = ephemeral_env(home, DEXORDER_STREAM__CHECKPOINT_INTERVAL_MS="200", **overrides)
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS", "DEXORDER_KAFKA__BOOTSTRAP_SERVERS")):
        p = start_platform(env)
        failure: list[PartFailed] = []

        def watch() -> None:
            try:
                p.supervisor.watch()
            except PartFailed as exc:  # reported by the test that caused it
                failure.append(exc)

        watcher = threading.Thread(target=watch, name="supervisor", daemon=True)
        watcher.start()
        try:
            yield p
            assert not failure, f"the supervisor gave up: {failure[0]}"
        finally:
            p.supervisor.request_stop()
            watcher.join(90)
            p.stop()


def health(url: str) -> dict[str, object]:
    """A part's ``/healthz`` body, also when it answers 503; {} when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            data: dict[str, object] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        data = json.loads(exc.read())
    except OSError:
        return {}
    return data


def pid_of(p: RunningPlatform, name: str) -> int:
    return next(r.proc.pid for r in p.supervisor.running if r.part.name == name)


async def wait_restarted(p: RunningPlatform, name: str, old_pid: int, timeout: float = 60) -> None:
    """Until the supervisor has started ``name`` again and it answers healthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_of(p, name) != old_pid and health(p.part(name).probe).get("healthy") is True:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} was not restarted within {timeout:.0f}s")


async def emulator_subscribed(p: RunningPlatform, stream: str, timeout: float = 30) -> None:
    """Until the ingestor has subscribed to ``stream`` (e.g. ``btcusdt@trade``) at the exchange."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            stats = await (await s.get(f"{p.cfg.emulator_url}/emulator/stats")).json()
            if stats["subscriptions"].get(stream):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the ingestor did not subscribe to {stream}")


async def exchange_trade(
    p: RunningPlatform,
    market: str,
    price: float,
    ts: int | None = None,
    trade_id: int | None = None,
) -> None:
    """Make one trade of 1 unit at the exchange emulator (``market`` e.g. ``BTCUSDT``)."""
    await trade(p, market, price, 1.0, ts, trade_id)
