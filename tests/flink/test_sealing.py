"""The Flink job publishes fired rules only sealed: a job publishing to the relay needs the
platform secret (``relay.rule_seal_key_file``), and says so before it starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec
import pytest

from dexorder.rule_sealing import RuleSealer, new_secret
from streaming.flink import config as job_config
from streaming.flink.config import ConfigError, RelayIO
from streaming.flink.relay import job_sealer
from tests.flink.conftest import FLINK_PYTHON, ROOT


def _job(tmp_path: Path, **relay: str) -> dict[str, object]:
    files = {"ticks": str(tmp_path / "ticks.jsonl"), "out": str(tmp_path / "out")}
    return {"files": files, "relay": {"address": "tcp://127.0.0.1:9", **relay}}


def test_a_job_publishing_to_the_relay_needs_the_seal_key(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(msgspec.json.encode(_job(tmp_path)))
    with pytest.raises(ConfigError, match=r"relay\.rule_seal_key_file must be set"):
        job_config.load(path)
    key = tmp_path / "seal.key"
    cfg = job_config.load(path, [f"relay.rule_seal_key_file={key}"])
    assert cfg.relay is not None and cfg.relay.rule_seal_key_file == str(key)


def test_the_seal_key_file_is_read_and_checked(tmp_path: Path) -> None:
    key = tmp_path / "seal.key"
    relay = RelayIO(address="tcp://127.0.0.1:9", rule_seal_key_file=str(key))
    with pytest.raises(ConfigError, match=r"relay\.rule_seal_key_file: cannot read"):
        job_sealer(relay)
    key.write_text("too short\n")
    with pytest.raises(ConfigError, match=r"relay\.rule_seal_key_file: 9 characters"):
        job_sealer(relay)
    secret = new_secret()
    key.write_text(secret + "\n")  # a trailing newline, as a mounted file may have
    assert job_sealer(relay).topic_for("alice") == RuleSealer.from_secret(secret).topic_for("alice")


@pytest.mark.skipif(not FLINK_PYTHON.exists(), reason="no .venv-flink: run `make flink-venv`")
def test_the_job_refuses_to_start_without_a_readable_seal_key(tmp_path: Path) -> None:
    cfg = tmp_path / "job.json"
    missing = tmp_path / "nowhere.key"
    cfg.write_bytes(msgspec.json.encode(_job(tmp_path, rule_seal_key_file=str(missing))))
    proc = subprocess.run(
        [str(FLINK_PYTHON), "-m", "streaming.flink.job", "--config", str(cfg)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert b"relay.rule_seal_key_file: cannot read" in proc.stderr
    assert b"Traceback" not in proc.stderr
