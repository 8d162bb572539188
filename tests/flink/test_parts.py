"""The Flink job's pure parts, in the main venv (no Flink): its configuration, the per-ticker
state and fold, and the relay publisher against a plain XSUB socket. One check runs the
job's entry point to see a misconfiguration refused before the JVM starts."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dexorder.contracts.events import Notification
from dexorder.contracts.rules import (
    OrderTrigger,
    PriceCross,
    Rule,
    RuleFired,
    RuleRecord,
    decode_record,
    encode_record,
)
from dexorder.record_signing import RecordKeys, signed_record, verify_record
from dexorder.schemas import Candle, Tick
from dexorder.topics import MARKET_RULES, NOTIFICATIONS, RULES_FIRED
from streaming.flink import config as job_config
from streaming.flink.config import ConfigError, RelayIO
from streaming.flink.keyed import KeySnapshot, KeyState, Routed, TickerFold, route_rule
from streaming.flink.records import fired_records, job_record_keys, rule_record_problem
from streaming.flink.relay import RelayPublisher
from tests.flink.conftest import FLINK_PYTHON, ROOT, RelayStandIn

T0 = 1_767_225_600_000


def _tick(i: int, price: float = 100.0, ts: int | None = None) -> Tick:
    return Tick(
        exchange="BINANCE",
        symbol="BTC/USDT",
        trade_id=str(i),
        price=price,
        amount=1.0,
        ts=T0 + i * 1_000 if ts is None else ts,
    )


def test_config_reads_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("files: {ticks: t.jsonl, out: out}\nparallelism: 2\n")
    cfg = job_config.load(path, ["allowed_lateness_ms=500", "checkpoints.dir=s3://b/ck"])
    assert cfg.files is not None and cfg.files.ticks == "t.jsonl"
    assert (cfg.parallelism, cfg.allowed_lateness_ms) == (2, 500)
    assert cfg.checkpoints.dir == "s3://b/ck"


@pytest.mark.parametrize(
    ("text", "overrides", "says"),
    [
        ("files: {ticks: t, out: o}\nkafka: {bootstrap: k:9092}\n", [], "exactly one of"),
        ("{}", [], "exactly one of"),
        ("files: {ticks: t, out: o}\nparalelism: 2\n", [], "paralelism"),
        ("files: {ticks: t, out: o}\n", ["parallelism=lots"], "parallelism"),
        ("files: {ticks: t, out: o}\n", ["parallelism"], "key=value"),
        ("- a list\n", [], "mapping"),
        (
            "files: {ticks: t, out: o}\nrelay: {address: 'tcp://r:1', secret_key_file: k}\n",
            [],
            "go together",
        ),
    ],
)
def test_config_refuses_what_is_not_one(
    tmp_path: Path, text: str, overrides: list[str], says: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        job_config.load(path, overrides)


def test_key_state_is_checkpointed_as_its_snapshot() -> None:
    fold = TickerFold(2_000)
    state = fold.new_state("BINANCE:BTC/USDT")
    fold.on_rule(
        state,
        RuleRecord(
            rule=Rule(
                id="r1",
                user="alice",
                ticker="BINANCE:BTC/USDT",
                condition=PriceCross(direction="above", level=200.0),
                created_at=T0,
            )
        ),
        "r1",
    )
    for i in range(5):
        fold.on_tick(state, _tick(i), 0)
    data = pickle.dumps(state)
    assert state.snapshot() in data  # MessagePack inside, not the objects' internals
    back: KeyState = pickle.loads(data)

    def snap(s: KeyState) -> KeySnapshot:  # decoded: a set's order in the bytes may differ
        return msgspec.msgpack.decode(s.snapshot(), type=KeySnapshot)

    assert snap(back) == snap(state)
    fired = fold.on_tick(back, _tick(6, price=201), 0).fired
    assert [f.rule.id for f in fired] == ["r1"]


def test_fold_closes_by_idle_time_and_at_the_end() -> None:
    fold = TickerFold(2_000)
    state = fold.new_state("BINANCE:BTC/USDT")
    assert fold.on_tick(state, _tick(0), now_ms=1_000).accepted
    assert not fold.on_tick(state, _tick(0), now_ms=1_000).accepted  # a duplicate
    # 61 s of wall clock with no tick: the minute closes (lateness 2 s)
    idle = fold.on_idle(state, now_ms=1_000 + 63_000)
    assert [(c.timeframe, c.trades) for c in idle.closed] == [("1m", 1)]
    assert fold.on_tick(state, _tick(1, ts=T0 + 1_000), 0).late  # behind the moved watermark
    end = fold.on_end(state)
    assert {c.timeframe for c in end.closed} == {"5m", "15m", "1h", "4h", "1d"}
    assert fold.open_candles(state) == []


@pytest.mark.parametrize("curve", [True, False])
def test_relay_publisher_waits_for_the_relay_then_sends(tmp_path: Path, curve: bool) -> None:
    relay = RelayStandIn(curve)
    key_file = tmp_path / "stream.key"
    key_file.write_bytes(relay.client_secret)
    cfg = RelayIO(
        address=relay.address,
        server_key=relay.public.decode() if curve else None,
        secret_key_file=str(key_file) if curve else None,
        subscribe_wait_ms=10_000,
    )
    pub = RelayPublisher(cfg)
    try:
        assert pub.wait_subscribed()
        candle = Candle(
            exchange="BINANCE",
            symbol="BTC/USDT",
            timeframe="1m",
            open_time=T0,
            open=1,
            high=2,
            low=1,
            close=2,
            volume=3,
            trades=2,
            closed=True,
        )
        pub.candle(candle)
        relay.wait_for(closed=1, fired=0, timeout_s=10)
        assert relay.candles == [("BINANCE:BTC/USDT|ohlc:1m", candle)]
    finally:
        pub.close()
        relay.close()


def test_relay_publisher_refuses_a_bad_key(tmp_path: Path) -> None:
    key_file = tmp_path / "stream.key"
    key_file.write_text("not a key")
    cfg = RelayIO(address="tcp://127.0.0.1:1", server_key="x" * 40, secret_key_file=str(key_file))
    with pytest.raises(ConfigError, match="Z85"):
        RelayPublisher(cfg)


def _job_refuses(tmp_path: Path, config: dict[str, object]) -> bytes:
    """Run the job (in .venv-flink) with ``config``: it must refuse it as a usage error
    (exit 2) with a message, not a traceback; the message (stderr)."""
    cfg = tmp_path / "job.json"
    cfg.write_bytes(msgspec.json.encode(config))
    proc = subprocess.run(
        [str(FLINK_PYTHON), "-m", "streaming.flink.job", "--config", str(cfg)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.skipif(not FLINK_PYTHON.exists(), reason="no .venv-flink: run `make flink-venv`")
def test_the_job_refuses_kafka_without_the_connector_jar(tmp_path: Path) -> None:
    stderr = _job_refuses(tmp_path, {"kafka": {"bootstrap": "127.0.0.1:9"}})
    assert b"FLINK_KAFKA_CONNECTOR_JAR" in stderr


def _record(rule_id: str, ticker: str) -> bytes:
    rule = Rule(
        id=rule_id,
        user="alice",
        ticker=ticker,
        condition=PriceCross(direction="below", level=90.0),
        created_at=T0,
    )
    return encode_record(RuleRecord(rule=rule))


def test_rule_records_are_routed_to_their_ticker() -> None:
    btc, eth = "BINANCE:BTC/USDT", "BINANCE:ETH/USDT"
    put = route_rule("r1", None, _record("r1", btc))
    assert (put.ticker, [c[:2] for c in put.changes]) == (btc, [(btc, "r1")])
    moved = route_rule("r1", btc, _record("r1", eth))
    assert moved.ticker == eth
    assert [(t, r, bool(v)) for t, r, v in moved.changes] == [(btc, "r1", False), (eth, "r1", True)]
    # a tombstone has no ticker: it goes where the rule was
    assert route_rule("r1", eth, None) == Routed(None, [(eth, "r1", b"")])
    assert route_rule("r1", None, None) == Routed(None, [])
    # not a rule, or filed under another id: nothing changes, counted as bad
    assert route_rule("r1", btc, b"{not json") == Routed(btc, [], bad=True)
    assert route_rule("r2", btc, _record("r1", eth)) == Routed(btc, [], bad=True)


def _pem_key(path: Path) -> RecordKeys:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.write_bytes(pem)
    return RecordKeys(key.public_key(), key)


def test_fired_rules_become_signed_records(tmp_path: Path) -> None:
    keys = _pem_key(tmp_path / "record.pem")
    assert job_record_keys(str(tmp_path / "record.pem")).public == keys.public
    order = Rule(
        id="o1",
        user="carol",
        ticker="BINANCE:BTC/USDT",
        condition=msgspec.convert(
            {"order_id": "o-1", "order_type": "limit", "side": "buy", "quantity": 1, "level": 95},
            OrderTrigger,
        ),
        created_at=T0,
    )
    fired = RuleFired(rule=order, fired_at=T0 + 5, price=94.0, fill_price=94.0)
    records = fired_records(fired, keys)
    assert [r.topic for r in records] == [NOTIFICATIONS, RULES_FIRED, MARKET_RULES]
    for r in records:
        verify_record(keys, r.topic, r.value, list(r.headers.items()))  # raises if not
    note = msgspec.json.decode(records[0].value, type=Notification)
    assert (note.event_id, note.user, note.kind) == ("rule:o1", "carol", "order_triggered")
    assert decode_record(records[2].value).fired == fired
    alert = msgspec.structs.replace(fired, rule=msgspec.structs.replace(order, condition=_CROSS))
    assert [r.topic for r in fired_records(alert, keys)] == [NOTIFICATIONS, MARKET_RULES]


_CROSS = PriceCross(direction="below", level=95.0)


def test_rule_records_count_only_with_the_platform_signature(tmp_path: Path) -> None:
    keys = _pem_key(tmp_path / "record.pem")
    value = _record("r1", "BINANCE:BTC/USDT")
    signed = dict(signed_record(keys, MARKET_RULES, value))
    assert rule_record_problem(keys, value, signed) is None
    assert "unsigned" in (rule_record_problem(keys, value, {}) or "")
    other = _pem_key(tmp_path / "other.pem")
    assert "forged" in (
        rule_record_problem(keys, value, dict(signed_record(other, MARKET_RULES, value))) or ""
    )
    # a signature is for one topic, and tombstones are signed too
    assert rule_record_problem(keys, value, dict(signed_record(keys, NOTIFICATIONS, value)))
    assert rule_record_problem(keys, None, dict(signed_record(keys, MARKET_RULES, b""))) is None
    assert rule_record_problem(keys, None, None)


def test_record_keys_refused_when_missing_or_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be set"):
        job_record_keys(None)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        job_record_keys(str(tmp_path / "bad.pem"))


@pytest.mark.skipif(not FLINK_PYTHON.exists(), reason="no .venv-flink: run `make flink-venv`")
def test_the_job_refuses_kafka_without_its_record_key(tmp_path: Path) -> None:
    jar = tmp_path / "connector.jar"
    jar.write_bytes(b"")
    kafka = {"bootstrap": "127.0.0.1:9", "connector_jar": str(jar)}
    stderr = _job_refuses(tmp_path, {"kafka": kafka})
    assert b"kafka.record_key_file must be set" in stderr
