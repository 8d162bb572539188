"""One run of the PyFlink job on Flink's mini-cluster, shared by the tests of this folder.

The job runs in its own virtualenv (``make flink-venv`` makes ``.venv-flink``; CI does), as
a subprocess of the test, on the fixture of :mod:`tests.flink.fixture`, with a relay
stand-in (a CURVE XSUB socket) listening, which opens the sealed fired rules with the
platform secret the job was given. A run costs tens of seconds, so every case is in
the one fixture and the run is made once per session.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from dexorder.contracts.rules import RuleFired, RuleRecord, decode_fired
from dexorder.rule_sealing import RuleSealer, new_secret
from dexorder.schemas import Candle, Tick, decode_candle
from launcher.ephemeral import free_port
from tests.flink import fixture

ROOT = Path(__file__).resolve().parents[2]
FLINK_PYTHON = ROOT / ".venv-flink" / "bin" / "python"
JOB_TIMEOUT_S = 300


def flink_missing() -> str | None:
    """Why the job cannot run here (None: it can)."""
    if not FLINK_PYTHON.exists():
        return "no .venv-flink: run `make flink-venv` (CI does) to run the PyFlink job's tests"
    if shutil.which("java") is None:
        return "no java: Flink needs Java 17 (Debian: openjdk-17-jre-headless)"
    return None


def write_lines(path: Path, items: list[Any]) -> None:
    with path.open("wb") as f:
        for item in items:
            f.write(msgspec.json.encode(item) + b"\n")


def read_lines(folder: Path) -> list[bytes]:
    """Every line of the committed JSON-lines files under ``folder`` (not in-progress ones)."""
    lines: list[bytes] = []
    for path in sorted(folder.rglob("*.jsonl")):
        lines += [line for line in path.read_bytes().splitlines() if line]
    return lines


def run_job(config: dict[str, Any], workdir: Path) -> None:
    """Run the job with ``config`` to its end; fail with the tail of its log otherwise."""
    cfg = workdir / "job.json"
    cfg.write_bytes(msgspec.json.encode(config))
    log = workdir / "job.log"
    env = {"FLINK_LOG_DIR": str(workdir / "flink-log"), "PATH": "/usr/bin:/bin"}
    with log.open("wb") as out:
        proc = subprocess.run(
            [str(FLINK_PYTHON), "-m", "streaming.flink.job", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=JOB_TIMEOUT_S,
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        pytest.fail(f"the Flink job exited with {proc.returncode}:\n{tail}")


class RelayStandIn:
    """A CURVE XSUB socket, subscribed to everything, recording what publishers send:
    candles on ``{ticker}|ohlc:{tf}``, fired rules sealed on ``RULE:{tag}`` (opened with
    ``seal_secret``, the platform secret the publisher is given; ``sealed`` keeps them as
    they came)."""

    def __init__(self, curve: bool = True) -> None:
        self.public, secret = zmq.curve_keypair()
        self.client_public, self.client_secret = zmq.curve_keypair()
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.seal_secret = new_secret()
        self.sealer = RuleSealer.from_secret(self.seal_secret)
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.XSUB)
        if curve:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(self.address)
        # subscribe to every topic: sent to each publisher as it connects (while the socket
        # is in use: libzmq attaches new peers when the owning thread calls into it)
        sock.send(b"\x01")
        self._sock = sock
        self.candles: list[tuple[str, Candle]] = []
        self.fired: list[tuple[str, RuleFired]] = []
        self.sealed: list[tuple[bytes, bytes]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            topic, data = self._sock.recv_multipart()
            with self._cond:
                if topic.startswith(b"RULE:"):
                    self.sealed.append((topic, data))
                    self.fired.append((topic.decode(), self.sealer.open(topic, data)))
                else:
                    self.candles.append((topic.decode(), decode_candle(data)))
                self._cond.notify_all()

    def wait_for(self, closed: int, fired: int, timeout_s: float) -> None:
        """Wait until ``closed`` closed candles and ``fired`` fired rules arrived (or the
        timeout)."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    sum(c.closed for _, c in self.candles) >= closed and len(self.fired) >= fired
                ),
                timeout_s,
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._ctx.term()


@dataclass
class FlinkRun:
    ticks: list[Tick]
    rules: list[RuleRecord]
    candles: list[Candle]
    fired: list[RuleFired]
    relay: RelayStandIn


@pytest.fixture(scope="session")
def flink_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkRun]:
    missing = flink_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("flink")
    ticks = fixture.ticks()
    rules = fixture.rules()
    write_lines(work / "ticks.jsonl", ticks)
    write_lines(work / "rules.jsonl", rules)
    relay = RelayStandIn()
    (work / "stream.key").write_bytes(relay.client_secret)
    (work / "rule_seal.key").write_text(relay.seal_secret)
    config = {
        "files": {
            "ticks": str(work / "ticks.jsonl"),
            "rules": str(work / "rules.jsonl"),
            "out": str(work / "out"),
        },
        "relay": {
            "address": relay.address,
            "server_key": relay.public.decode(),
            "secret_key_file": str(work / "stream.key"),
            "rule_seal_key_file": str(work / "rule_seal.key"),
        },
        "checkpoints": {"interval_ms": 200, "dir": (work / "checkpoints").as_uri()},
        "allowed_lateness_ms": fixture.LATENESS_MS,
        "live_update_interval_ms": 1_000,
    }
    try:
        run_job(config, work)
        candles = [decode_candle_json(line) for line in read_lines(work / "out" / "candles")]
        fired = [decode_fired(line) for line in read_lines(work / "out" / "fired")]
        yield FlinkRun(ticks, rules, candles, fired, relay)
    finally:
        relay.close()


_candle_json = msgspec.json.Decoder(Candle)


def decode_candle_json(line: bytes) -> Candle:
    return _candle_json.decode(line)
