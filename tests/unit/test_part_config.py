"""Each part is built from its own configuration section (``Part.from_config``).

Every setting here differs from its default, so a section field renamed or a setting no
longer handed to its part fails here, not in a part started by ``dexorder up``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dexorder.config import ConfigError, Settings
from dexorder.kafka_auth import KafkaConnection
from dexorder.relay_keys import RelayPublisher
from dexorder.tokens import new_keys
from services.embedder.server import Embedder
from services.exchange_emulator.state import EmulatorState
from services.ingestor.service import Ingestor
from services.relay.server import Relay
from streaming.lake_maintenance import MaintenancePolicy
from streaming.lake_writer import LakeWriter
from streaming.runner import StreamRunner
from triggers.dispatcher import Dispatcher
from triggers.spec import load_triggers

BROKERS = "kafka-a:19092,kafka-b:19092"


def settings(home: Path, **sections: object) -> Settings:
    """Settings with Kafka set and the relay on ports of its own (none of the defaults)."""
    relay = {
        "host": "10.0.0.7",
        "router_port": 6659,
        "work_port": 6655,
        "xsub_port": 6657,
        "xpub_port": 6658,
    }
    return Settings(
        home=home,
        kafka={"bootstrap_servers": BROKERS},
        relay=relay,
        market_data={"max_clock_skew_ms": 1234},
        **sections,  # type: ignore[arg-type]
    )


def test_stream_runner(tmp_path: Path) -> None:
    cfg = settings(
        tmp_path,
        stream={
            "group_id": "g-stream",
            "allowed_lateness_ms": 333,
            "live_update_interval_ms": 44,
            "checkpoint_interval_ms": 555,
            "fetch_max_wait_ms": 66,
        },
    )
    r = StreamRunner.from_config(cfg)
    assert (r.bootstrap, r.group_id) == (KafkaConnection(BROKERS), "g-stream")
    assert (r.allowed_lateness_ms, r.live_update_interval_ms) == (333, 44)
    assert (r.checkpoint_interval_ms, r.fetch_max_wait_ms, r.max_skew_ms) == (555, 66, 1234)
    assert r.state_dir == tmp_path / "state" / "stream"
    assert isinstance(r.relay_xsub, RelayPublisher)
    assert r.relay_xsub.address == "tcp://10.0.0.7:6657"


def test_lake_writer(tmp_path: Path) -> None:
    cfg = settings(
        tmp_path,
        writer={"group_id": "g-lake", "batch_rows": 77, "batch_ms": 88},
        lake={
            "maintenance_interval_s": 9,
            "compact_min_files": 3,
            "snapshot_retention_hours": 0.5,
            "keep_snapshots": 4,
        },
    )
    w = LakeWriter.from_config(cfg)
    assert (w.bootstrap, w.group_id, w.batch_rows, w.batch_ms) == (
        KafkaConnection(BROKERS),
        "g-lake",
        77,
        88,
    )
    assert w.max_skew_ms == 1234
    assert w.maintenance == MaintenancePolicy(
        interval_s=9, compact_min_files=3, snapshot_retention_ms=1_800_000, keep_snapshots=4
    )
    assert isinstance(w.relay_xsub, RelayPublisher)
    assert w.relay_xsub.address == "tcp://10.0.0.7:6657"


def test_ingestor(tmp_path: Path) -> None:
    cfg = settings(
        tmp_path,
        emulator={"host": "10.0.0.8", "port": 9999},
        exchanges=[
            {"name": "BINANCE"},
            {
                "name": "kraken",
                "ccxt_id": "krakenpro",
                "transport": "polling",
                "poll_interval_ms": 250,
                "symbols": ["SOL/USD"],
                "shard_index": 2,
                "shard_count": 3,
            },
        ],
    )
    i = Ingestor.from_config(cfg, cfg.exchange_config("KRAKEN"))
    assert (i.exchange_name, i.ccxt_id, i.bootstrap) == (
        "KRAKEN",
        "krakenpro",
        KafkaConnection(BROKERS),
    )
    assert i.work_address == "tcp://10.0.0.7:6655"
    assert (i.symbols, i.transport, i.poll_interval_s) == (["SOL/USD"], "polling", 0.25)
    assert (i.shard_index, i.shard_count, i.max_skew_ms) == (2, 3, 1234)
    assert i.emulator_url == "http://10.0.0.8:9999"  # emulated is the default
    assert isinstance(i.relay_xsub, RelayPublisher)
    assert i.relay_xsub.address == "tcp://10.0.0.7:6657"
    real = settings(tmp_path, exchanges=[{"name": "BINANCE", "emulated": False}])
    assert Ingestor.from_config(real, real.exchanges[0]).emulator_url is None


def test_relay(tmp_path: Path) -> None:
    cfg = settings(tmp_path, exchanges=[{"name": "binance"}, {"name": "Kraken"}])
    relay = Relay.from_config(cfg)
    try:
        a = relay.addresses
        assert (a.router, a.work) == ("tcp://10.0.0.7:6659", "tcp://10.0.0.7:6655")
        assert (a.xsub, a.xpub) == ("tcp://10.0.0.7:6657", "tcp://10.0.0.7:6658")
        assert relay.exchanges == {"BINANCE", "KRAKEN"}
        assert relay.keys.subscribers is None  # curve_subscribers is off by default
    finally:
        relay.ctx.term()


def test_exchange_emulator() -> None:
    cfg = Settings(emulator={"seed": 7, "trade_rate": 0.25, "weight_limit_per_minute": 99})
    state = EmulatorState.from_section(cfg.emulator)
    assert (state.sim.seed, state.sim.trade_rate, state.weight_limit) == (7, 0.25, 99)


def test_embedder(tmp_path: Path) -> None:
    keys = new_keys()
    cfg = Settings(home=tmp_path, agent={"token_public_key": keys.public_pem})
    assert Embedder.from_config(cfg).keys.public_pem == keys.public_pem


def test_trigger_dispatcher(tmp_path: Path) -> None:
    cfg = settings(tmp_path, gateway={"host": "10.0.0.9", "port": 8123})
    triggers = load_triggers()
    d = Dispatcher.from_config(cfg, triggers, auth=lambda: "token")
    assert (d.bootstrap, d.triggers) == (KafkaConnection(BROKERS), triggers)
    assert d.url_for(triggers[0]) == f"http://10.0.0.9:8123/functions/{triggers[0].function}/"
    assert d.auth is not None and d.auth() == "token"


def test_a_part_needing_kafka_refuses_a_config_without_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers is not set"):
        StreamRunner.from_config(Settings(home=tmp_path))
