"""`dexorder up`, `status`, Ctrl-C and `down`: every part starts, and nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEXORDER = [sys.executable, "-m", "launcher"]
PARTS = {"kafka", "exchange-emulator", "relay", "ingestor-binance", "lake-writer", "stream"}


def processes_of(home: str) -> list[int]:
    """Pids of every process whose environment names this platform home."""
    needle = f"DEXORDER_HOME={home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEXORDER, *args], env=env, capture_output=True, text=True, timeout=120)


def wait_status(
    env: dict[str, str], want: int, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        res = run(["status", "--json"], env)
        if res.returncode == want or time.monotonic() > deadline:
            return res
        time.sleep(0.2)


def test_up_status_ctrl_c_leaves_nothing(isolated_env: dict[str, str]) -> None:
    env = {**os.environ, **isolated_env}
    home = env["DEXORDER_HOME"]
    assert run(["status"], env).returncode == 1  # nothing running yet
    up = subprocess.Popen(
        [*DEXORDER, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        res = wait_status(env, 0)
        assert res.returncode == 0, res.stdout + res.stderr
        report = json.loads(res.stdout)
        assert {p["name"] for p in report["parts"]} == PARTS
        assert all(p["healthy"] for p in report["parts"])
        assert len(processes_of(home)) >= len(PARTS) + 1
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "platform is up" in out and "platform stopped" in out
    for name in PARTS:
        assert name in out  # where each part listens was printed
    assert processes_of(home) == []
    assert run(["status"], env).returncode == 1


def test_up_detach_then_down(isolated_env: dict[str, str]) -> None:
    env = {**os.environ, **isolated_env}
    home = env["DEXORDER_HOME"]
    res = run(["up", "--detach"], env)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert "platform running in the background" in res.stdout
        assert wait_status(env, 0).returncode == 0
        again = run(["up"], env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = run(["down"], env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_of(home) == []


def test_a_killed_part_is_restarted(isolated_env: dict[str, str]) -> None:
    env = {**os.environ, **isolated_env}
    assert run(["up", "--detach"], env).returncode == 0
    try:
        state = json.loads((Path(env["DEXORDER_HOME"]) / "run" / "platform.json").read_text())
        relay = next(p for p in state["parts"] if p["name"] == "relay")
        os.kill(relay["pid"], signal.SIGKILL)
        # the supervisor notices, restarts it, and the platform is healthy again
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = json.loads((Path(env["DEXORDER_HOME"]) / "run" / "platform.json").read_text())
            new = next(p for p in state["parts"] if p["name"] == "relay")
            if new["pid"] != relay["pid"] and run(["status"], env).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the relay was not restarted")
    finally:
        assert run(["down"], env).returncode == 0
    assert processes_of(env["DEXORDER_HOME"]) == []


def test_bad_config_names_the_key(isolated_env: dict[str, str], tmp_path: Path) -> None:
    home = Path(isolated_env["DEXORDER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text("stream:\n  allowed_lateness_ms: soon\nbogus: 1\n")
    res = run(["status"], {**os.environ, **isolated_env})
    assert res.returncode == 2
    assert "stream.allowed_lateness_ms" in res.stderr and "bogus" in res.stderr
    assert "Traceback" not in res.stderr


async def test_a_killed_broker_is_restarted_with_its_dependents(
    isolated_env: dict[str, str],
) -> None:
    import asyncio

    import aiohttp

    from dexorder.client import subscribe
    from dexorder.config import load_config

    env = {**os.environ, **isolated_env}
    assert run(["up", "--detach"], env).returncode == 0
    state_path = Path(env["DEXORDER_HOME"]) / "run" / "platform.json"
    try:
        before = {p["name"]: p["pid"] for p in json.loads(state_path.read_text())["parts"]}
        os.kill(before["kafka"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            after = {p["name"]: p["pid"] for p in json.loads(state_path.read_text())["parts"]}
            moved = {n for n in after if after[n] != before[n]}
            if {"kafka", "ingestor-binance", "lake-writer"} <= moved and run(
                ["status"], env
            ).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the platform did not recover from a broker crash")
        assert after["exchange-emulator"] == before["exchange-emulator"]  # started before it
        # the stream runner reads the topics made again from their beginning itself
        assert after["stream"] == before["stream"]
        cfg = load_config()
        stream = subscribe("BINANCE:BTC/USDT", "1m", config=cfg)

        async def first_match() -> float:
            async for c in stream:
                if c.close == 4242.0:
                    return c.close
            raise AssertionError("subscription ended")

        got = asyncio.ensure_future(first_match())
        async with aiohttp.ClientSession() as s:
            for _ in range(120):
                await s.post(
                    f"{cfg.emulator_url}/emulator/trades",
                    json={"symbol": "BTCUSDT", "price": 4242.0, "qty": 1},
                )
                done, _ = await asyncio.wait({got}, timeout=0.5)
                if done:
                    break
        assert got.result() == 4242.0
    finally:
        assert run(["down"], env).returncode == 0
    assert processes_of(env["DEXORDER_HOME"]) == []
