"""The cluster's stream job on Apache Flink: ticks → candles (and fired rules), as PyFlink.

Run it locally on Flink's mini-cluster against files (``make flink-job``, or
``.venv-flink/bin/python -m streaming.flink.job --config streaming/flink/local.yaml``);
in the cluster the same module is the ``PythonDriver`` entry, reading Kafka.

The graph::

    ticks ─decode+validate─ key by ticker ─┐
                                           ├▶ FoldTicks ─▶ closed candles ─▶ candle sink
    market.rules ─ key by rule id ─ RuleTable ┘    │  ├─▶ fired rules ─▶ fired-rule sinks
      (files: the rules in force from the start)   │  └─▶ live updates ─┐
                                                   └── closed, fired ───┴▶ relay XSUB

* ``FoldTicks`` is a ``KeyedCoProcessFunction`` (ticks, and rule changes keyed by the
  rule's ticker) holding one ticker's state in a Flink ``ValueState``
  (:class:`streaming.flink.keyed.KeyState`); the folding itself is
  :class:`streaming.flink.keyed.TickerFold`, i.e. the local runner's ``CandleBook`` and
  ``TickerRules``. ``RuleTable`` remembers each rule's ticker, so a tombstone (which
  carries none) reaches the right one. A rule applies to the ticks that reach the fold after
  it (and at or after its ``created_at``): the two inputs are not ordered against each
  other, so a replay of files puts its rules in force before the first tick instead.
* Quiet tickers close by a processing-time timer (``idle_close_ms``), a bounded input closes
  everything by an event-time timer at the end of time, which Flink's final watermark fires.
* Sources and sinks by configuration: ``files`` (JSON lines in, JSON lines out through
  Flink's ``FileSink``, committed at checkpoints) or ``kafka`` (raw MessagePack records
  through Flink's Kafka SQL connector, exactly-once into ``market.candles``,
  ``notifications``, ``rules.fired`` and the fired rules' records on ``market.rules``); the relay
  publisher runs when ``relay`` is set, and fired rules reach it sealed (``SealFired``,
  :mod:`dexorder.rule_sealing`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dexorder.contracts.rules import BadRule, Rule, decode_record
from streaming.flink import config as job_config
from streaming.flink.config import JobConfig
from streaming.flink.records import job_record_keys
from streaming.flink.relay import job_sealer

# PyFlink exists only in .venv-flink; the pure modules above import without it.
from pyflink.common import Configuration, Encoder, Types, WatermarkStrategy  # isort: skip
from pyflink.datastream import DataStream, StreamExecutionEnvironment  # isort: skip
from pyflink.datastream.connectors import Sink  # isort: skip
from pyflink.datastream.connectors.file_system import (  # isort: skip
    BucketAssigner,
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)
from pyflink.java_gateway import get_gateway  # isort: skip

from streaming.flink.functions import (  # isort: skip
    BYTES,
    FIRED,
    KEYED_TICK,
    LIVE,
    RELAY_MESSAGE,
    RULE_CHANGE,
    DecodeTicks,
    FoldTicks,
    PublishToRelay,
    RuleTable,
    SealFired,
    SignedFired,
    candle_json,
    candle_record,
    candle_relay,
    fired_text,
)

#: the project's folders the Python workers import (the job ships them with the job)
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dexorder", "streaming")


def _discard() -> Sink:
    jvm = get_gateway().jvm
    return Sink(jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())


def _file_sink(folder: Path, prefix: str) -> FileSink:
    return (
        FileSink.for_row_format(str(folder), Encoder.simple_string_encoder())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_output_file_config(OutputFileConfig(prefix, ".jsonl"))
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
        .build()
    )


def environment(cfg: JobConfig) -> StreamExecutionEnvironment:
    """The execution environment: checkpoints, parallelism, the Python workers' code."""
    conf = Configuration()
    ck = cfg.checkpoints
    conf.set_string("execution.checkpointing.interval", f"{ck.interval_ms} ms")
    conf.set_string(
        "execution.checkpointing.mode",
        "EXACTLY_ONCE" if ck.mode == "exactly-once" else "AT_LEAST_ONCE",
    )
    if ck.dir:
        conf.set_string("execution.checkpointing.dir", ck.dir)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.state.cache-size", str(cfg.state_cache_size))
    # files are a replay: a failure is an answer, not something to retry for ever (the
    # default with checkpoints on); the cluster backs off and retries
    conf.set_string(
        "restart-strategy.type", "none" if cfg.files is not None else "exponential-delay"
    )
    if cfg.kafka is not None:
        # a cancelled or given-up job can be started again from its last checkpoint
        conf.set_string(
            "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
        )
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    # otherwise the Python workers start with another interpreter ("No module named pyflink")
    env.set_python_executable(sys.executable)
    for package in PACKAGES:
        env.add_python_file(str(ROOT / package))
    return env


def initial_rules(path: str | None) -> dict[str, list[Rule]]:
    """The active rules of a file of :class:`RuleRecord` lines, by ticker."""
    by_ticker: dict[str, list[Rule]] = {}
    if path is None:
        return by_ticker
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = decode_record(line)
            except BadRule as exc:
                raise job_config.ConfigError(f"{path}:{n}: {exc}") from None
            if record.fired is None:
                by_ticker.setdefault(record.rule.ticker, []).append(record.rule)
    return by_ticker


def build(
    env: StreamExecutionEnvironment, cfg: JobConfig, rules: dict[str, list[Rule]] | None = None
) -> None:
    """Add the job's graph to ``env`` (sources and sinks as configured); ``rules`` are the
    rules in force from the start (files only)."""
    if cfg.files is not None:
        source = FileSource.for_record_stream_format(
            StreamFormat.text_line_format(), cfg.files.ticks
        ).build()
        # one reader: a file's lines reach the fold in file order (the order of arrival)
        raw: DataStream = env.from_source(
            source, WatermarkStrategy.no_watermarks(), "ticks"
        ).set_parallelism(1)
        fmt = "json"
        # rules in files are in force from the start; no changes arrive while it runs
        changes = env.from_collection([], type_info=RULE_CHANGE)
    else:
        assert cfg.kafka is not None
        raw = _kafka_ticks(env, cfg)
        fmt = "msgpack"
        rules = {}  # they come from the compacted topic
        changes = (
            _kafka_rules(env, cfg)
            .key_by(lambda r: bytes(r[0]).decode(errors="replace"), key_type=Types.STRING())
            .process(RuleTable(cfg.kafka), output_type=RULE_CHANGE)
            .name("rules by ticker")
        )
    # as many decoders as readers, chained to them: a reader's order reaches the fold intact
    ticks = (
        raw.process(DecodeTicks(fmt, cfg.max_skew_ms), output_type=KEYED_TICK)
        .set_parallelism(1 if cfg.files is not None else cfg.parallelism)
        .name("decode ticks")
    )
    closed = (
        ticks.key_by(lambda t: t[0], key_type=Types.STRING())
        .connect(changes.key_by(lambda c: c[0], key_type=Types.STRING()))
        .process(FoldTicks(cfg, rules or {}), output_type=BYTES)
        .name("candles and rules")
    )
    fired = closed.get_side_output(FIRED)
    if cfg.files is not None:
        out = Path(cfg.files.out)
        closed.map(candle_json, output_type=Types.STRING()).sink_to(
            _file_sink(out / "candles", "candles")
        ).name("candles file")
        fired.map(fired_text, output_type=Types.STRING()).sink_to(
            _file_sink(out / "fired", "fired")
        ).name("fired rules file")
    else:
        _kafka_sinks(env, cfg, closed, fired)
    if cfg.relay is not None:
        closed.map(candle_relay, output_type=RELAY_MESSAGE).union(
            closed.get_side_output(LIVE), fired.map(SealFired(cfg), output_type=RELAY_MESSAGE)
        ).process(PublishToRelay(cfg)).name("relay publisher").sink_to(_discard())


# -- Kafka (the cluster) ------------------------------------------------------------------


def _connector_jar(cfg: JobConfig) -> str:
    assert cfg.kafka is not None
    jar = cfg.kafka.connector_jar or os.environ.get("FLINK_KAFKA_CONNECTOR_JAR")
    if not jar or not Path(jar).is_file():
        raise job_config.ConfigError(
            "kafka: the Flink Kafka SQL connector jar is needed "
            "(kafka.connector_jar or FLINK_KAFKA_CONNECTOR_JAR naming the jar file)"
        )
    return Path(jar).resolve().as_uri()


_TABLE_ENVS: dict[int, Any] = {}
#: every Kafka table is (k BYTES, v BYTES): the record's key and value as they are
_RAW = (
    "'connector' = 'kafka', 'properties.bootstrap.servers' = '{bootstrap}', "
    "'key.format' = 'raw', 'key.fields' = 'k', 'value.format' = 'raw', "
    "'value.fields-include' = 'EXCEPT_KEY', 'topic' = '{topic}'"
)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def kafka_table_options(k: job_config.KafkaIO, topic: str) -> str:
    """A Kafka table's connector options: ``_RAW`` and the client's security (TLS, SASL)."""
    security = "".join(
        f", {_sql_text('properties.' + key)} = {_sql_text(value)}"
        for key, value in k.client_properties().items()
    )
    return _RAW.format(bootstrap=k.bootstrap, topic=topic) + security


def _tables(env: StreamExecutionEnvironment, cfg: JobConfig) -> Any:
    """The job's table environment with the Kafka tables declared (once per env)."""
    t_env = _TABLE_ENVS.get(id(env))
    if t_env is not None:
        return t_env
    from pyflink.table import StreamTableEnvironment

    assert cfg.kafka is not None
    k = cfg.kafka
    env.add_jars(_connector_jar(cfg))
    t_env = _TABLE_ENVS[id(env)] = StreamTableEnvironment.create(env)
    read = (
        f"'properties.group.id' = '{k.group_id}', 'properties.auto.offset.reset' = 'earliest', "
        "'properties.isolation.level' = 'read_committed'"
    )
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE ticks_in (k BYTES, v BYTES) WITH ("
        f"{kafka_table_options(k, k.ticks_topic)}, {read}, "
        f"'scan.startup.mode' = '{k.startup}')"
    )
    # the compacted rules topic is read whole on a first start (later: from the checkpoint)
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE rules_in (k BYTES, v BYTES, headers MAP<STRING, BYTES> METADATA) "
        "WITH ("
        f"{kafka_table_options(k, k.rules_topic)}, {read}, "
        "'scan.startup.mode' = 'earliest-offset')"
    )
    guarantee = "exactly-once" if k.exactly_once else "at-least-once"
    signed = "headers MAP<STRING, BYTES> METADATA"  # the records' signatures go there
    for table, topic, columns in (
        ("candles_out", k.candles_topic, "k BYTES, v BYTES"),
        ("notifications_out", k.notifications_topic, f"k BYTES, v BYTES, {signed}"),
        ("fired_out", k.fired_topic, f"k BYTES, v BYTES, {signed}"),
        ("rules_out", k.rules_topic, f"k BYTES, v BYTES, {signed}"),
    ):
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE {table} ({columns}) WITH ("
            f"{kafka_table_options(k, topic)}, "
            f"'sink.delivery-guarantee' = '{guarantee}', "
            f"'sink.transactional-id-prefix' = '{k.transactional_id_prefix}-{table}', "
            "'properties.transaction.timeout.ms' = '900000')"
        )
    return t_env


def _kafka_ticks(env: StreamExecutionEnvironment, cfg: JobConfig) -> DataStream:
    t_env = _tables(env, cfg)
    return t_env.to_data_stream(t_env.sql_query("SELECT v FROM ticks_in WHERE v IS NOT NULL"))


def _kafka_rules(env: StreamExecutionEnvironment, cfg: JobConfig) -> DataStream:
    t_env = _tables(env, cfg)
    return t_env.to_data_stream(
        t_env.sql_query("SELECT k, v, headers FROM rules_in WHERE k IS NOT NULL")
    )


def _kafka_sinks(
    env: StreamExecutionEnvironment, cfg: JobConfig, closed: DataStream, fired: DataStream
) -> None:
    """Closed candles → ``market.candles``; fired rules, signed → ``notifications``, their
    record (with the firing) → ``market.rules``, and fired orders → ``rules.fired``."""
    t_env = _tables(env, cfg)
    k = cfg.kafka
    assert k is not None
    rows = Types.ROW_NAMED(["k", "v"], [BYTES, BYTES])
    signed = Types.ROW_NAMED(
        ["k", "v", "headers"], [BYTES, BYTES, Types.MAP(Types.STRING(), BYTES)]
    )
    statements = t_env.create_statement_set()
    for table, stream in (
        ("candles_out", closed.map(candle_record, output_type=rows)),
        (
            "notifications_out",
            fired.flat_map(SignedFired(k, k.notifications_topic), output_type=signed),
        ),
        ("rules_out", fired.flat_map(SignedFired(k, k.rules_topic), output_type=signed)),
        ("fired_out", fired.flat_map(SignedFired(k, k.fired_topic), output_type=signed)),
    ):
        statements.add_insert(table, t_env.from_data_stream(stream))
    statements.attach_as_datastream()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streaming.flink.job", description=__doc__)
    parser.add_argument("--config", help="the job's YAML configuration file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    args = parser.parse_args(argv)
    try:
        cfg = job_config.load(args.config, args.set)
        # what can be wrong with the inputs is said before the JVM starts
        rules = initial_rules(cfg.files.rules) if cfg.files is not None else {}
        if cfg.kafka is not None:
            _connector_jar(cfg)
            job_record_keys(cfg.kafka.record_key_file)  # the records' signing key, fit
        if cfg.relay is not None:
            job_sealer(cfg.relay)  # the fired rules' seal key, readable and fit
        env = environment(cfg)
        build(env, cfg, rules)
    except (job_config.ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env.execute(cfg.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
