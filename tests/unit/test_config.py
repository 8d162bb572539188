"""Configuration: files, secrets, environment precedence, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dexorder.config import ConfigError, load_config


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("DEXORDER_CONFIG", "DEXORDER_SECRETS", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(var, raising=False)
    import os

    for var in [v for v in os.environ if v.startswith("DEXORDER_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DEXORDER_HOME", str(tmp_path))
    return tmp_path


def test_defaults(home: Path) -> None:
    cfg = load_config()
    assert cfg.home == home
    assert (
        cfg.relay.router_port,
        cfg.relay.work_port,
        cfg.relay.xsub_port,
        cfg.relay.xpub_port,
    ) == (5559, 5555, 5557, 5558)
    assert cfg.kafka.bootstrap_servers is None
    assert [e.name for e in cfg.exchanges] == ["BINANCE"]


def test_files_then_secrets_then_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "config.yaml").write_text(
        "relay:\n  router_port: 7000\n  xpub_port: 7001\nemulator:\n  seed: 1\n"
    )
    (home / "secrets.yaml").write_text("relay:\n  xpub_port: 7002\n")
    monkeypatch.setenv("DEXORDER_RELAY__ROUTER_PORT", "7003")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    cfg = load_config()
    assert cfg.relay.router_port == 7003  # environment wins over the file
    assert cfg.relay.xpub_port == 7002  # secrets win over config
    assert cfg.emulator.seed == 1
    assert cfg.kafka.bootstrap_servers == "broker:9092"


def test_bad_value_names_the_key(home: Path) -> None:
    (home / "config.yaml").write_text("relay:\n  router_port: seventy\n")
    with pytest.raises(ConfigError, match=r"relay\.router_port") as info:
        load_config()
    assert "seventy" in str(info.value)


def test_unknown_key_is_named(home: Path) -> None:
    (home / "config.yaml").write_text("stream:\n  allowed_latenes_ms: 5\n")
    with pytest.raises(ConfigError, match=r"stream\.allowed_latenes_ms"):
        load_config()


def test_bad_environment_value_is_named(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEXORDER_EMULATOR__PORT", "99999")
    with pytest.raises(ConfigError, match=r"emulator\.port"):
        load_config()


def test_not_yaml(home: Path) -> None:
    (home / "config.yaml").write_text("relay: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config()
