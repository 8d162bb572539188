"""Lake maintenance on a real pyiceberg catalog: compaction, expiry, schema evolution, S3.

The rows go in through the writer's own commit (:func:`commit_batch`), so
the table looks as the live writer leaves it: a file per commit per partition.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from moto.server import ThreadedMotoServer
from pyiceberg.table import Table
from pyiceberg.types import DoubleType

from dexorder.config import Settings
from dexorder.lake.query import get_candles
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import Candle
from streaming.lake_maintenance import compact, expire, files_per_partition, now_ms, partitions
from streaming.lake_rows import PendingBatch
from streaming.lake_writer import commit_batch, committed_offsets

pytestmark = pytest.mark.integration

T0 = 1_704_067_200_000  # 2024-01-01
MIN = 60_000
DAY = 86_400_000
TICKERS = ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT"]


def live_minutes(table: Table, minutes: range, offset_base: int = 0) -> None:
    """One commit per minute, as the live writer makes them: a closed 1m candle per ticker."""
    for m in minutes:
        batch = PendingBatch()
        for ticker in TICKERS:
            ex, sym = ticker.split(":")
            batch.add_candle(
                Candle(
                    exchange=ex,
                    symbol=sym,
                    timeframe="1m",
                    open_time=T0 + m * MIN,
                    open=100 + m,
                    high=101 + m,
                    low=99 + m,
                    close=100.5 + m,
                    volume=1.0,
                    trades=3,
                    closed=True,
                )
            )
        batch.offsets = {"market.candles:0": offset_base + m + 1}
        commit_batch(table, batch)


def all_rows(table: Table, ticker: str = TICKERS[0], end: int = T0 + 3 * DAY) -> pa.Table:
    return get_candles(table, ticker, "1m", T0, end)


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def open_table(cfg: Settings) -> Table:
    """A handle of its own on the lake (as another process or thread would have)."""
    return ohlc_table(open_catalog(cfg))


@pytest.fixture
def table(cfg: Settings) -> Table:
    return open_table(cfg)


def test_compaction_leaves_one_file_per_partition_and_the_same_rows(table: Table) -> None:
    live_minutes(table, range(1440 - 12, 1440 + 10))  # the last 12 minutes of a day, 10 of the next
    before = {t: all_rows(table, t) for t in TICKERS}
    offsets = committed_offsets(table)
    assert sorted(p.files for p in partitions(table)) == [10, 10, 12, 12]

    progress: list[tuple[int, int]] = []
    report = compact(table, min_files=8, on_progress=lambda d, t: progress.append((d, t)))

    assert report.partitions == 4 and report.files_after == 4
    assert progress[-1] == (4, 4)
    assert [p.files for p in partitions(table)] == [1, 1, 1, 1]
    for t in TICKERS:
        assert all_rows(table, t).equals(before[t])
    assert committed_offsets(table) == offsets  # the writer's exactly-once record survives
    assert compact(table, min_files=8).partitions == 0  # nothing left to do


def test_compaction_racing_the_writer_loses_and_repeats_nothing(
    table: Table, cfg: Settings
) -> None:
    live_minutes(table, range(0, 10))
    other = open_table(cfg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_compacting() -> None:
        try:
            while not stop.is_set():
                compact(other, min_files=2)
        except BaseException as exc:
            errors.append(exc)

    racer = threading.Thread(target=keep_compacting)
    racer.start()
    try:
        live_minutes(table, range(10, 40))
    finally:
        stop.set()
        racer.join()
    assert not errors, errors
    times = all_rows(table)["open_time"].to_pylist()
    assert len(times) == 40 == len(set(times))
    assert committed_offsets(table) == {"market.candles:0": 40}


def test_readers_never_see_a_partition_half_compacted(table: Table, cfg: Settings) -> None:
    live_minutes(table, range(0, 10))
    seen: list[tuple[int, int]] = []  # (rows, distinct open times) per read
    stop = threading.Event()

    def read() -> None:
        reader = open_table(cfg)
        while not stop.is_set():
            reader.refresh()
            times = all_rows(reader)["open_time"].to_pylist()
            seen.append((len(times), len(set(times))))

    t = threading.Thread(target=read)
    t.start()
    try:
        for k in range(4):
            live_minutes(table, range(10 + 5 * k, 15 + 5 * k))
            compact(table, min_files=2)
    finally:
        stop.set()
        t.join()
    assert len(seen) > 4
    # half a compaction would show the old and the new file (duplicates) or neither (rows lost)
    assert all(rows == distinct for rows, distinct in seen)
    counts = [rows for rows, _ in seen]
    assert counts == sorted(counts) and counts[0] >= 10
    assert all_rows(table).num_rows == 30


def test_expiry_drops_old_snapshots_and_their_files_but_not_the_data(table: Table) -> None:
    live_minutes(table, range(0, 10))
    first = table.snapshots()[0]
    as_of_first = get_candles(table, TICKERS[0], "1m", T0, T0 + DAY, as_of_ms=first.timestamp_ms)
    assert as_of_first.num_rows == 1  # time travel: the lake as the first commit left it
    compact(table, min_files=2)
    data_dir = Path(table.location()[len("file://") :]) / "data"
    on_disk = sum(len(files) for _, _, files in os.walk(data_dir))
    assert on_disk == 10 * 2 + 2  # the compacted files beside the small ones they replace

    snapshots = len(table.snapshots())
    report = expire(table, now_ms() + 1, keep_last=1)

    assert (report.snapshots_kept, report.snapshots_expired) == (1, snapshots - 1)
    assert sum(len(files) for _, _, files in os.walk(data_dir)) == 2
    assert all_rows(table).num_rows == 10
    with pytest.raises(ValueError, match="no snapshot as of"):
        get_candles(table, TICKERS[0], "1m", T0, T0 + DAY, as_of_ms=first.timestamp_ms)


def test_expiry_keeps_snapshots_within_the_retention(table: Table) -> None:
    live_minutes(table, range(0, 5))
    oldest = min(s.timestamp_ms for s in table.snapshots())
    report = expire(table, oldest, keep_last=1)  # nothing is older than the oldest
    assert report.snapshots_expired == 0 and report.snapshots_kept == 5


def test_a_column_added_later_breaks_no_reader(table: Table, cfg: Settings) -> None:
    live_minutes(table, range(0, 3))
    old_reader = open_table(cfg)
    with table.update_schema() as update:
        update.add_column("vwap", DoubleType(), doc="volume-weighted average price")
    table.refresh()
    # the writer, unaware of the new column, keeps appending
    live_minutes(table, range(3, 6))
    # a new-schema row with the column set
    with_vwap = all_rows(table).slice(0, 1).drop_columns(["vwap"])
    with_vwap = with_vwap.set_column(
        1, pa.field("ticker", pa.string(), nullable=False), pa.array(["BINANCE:SOL/USDT"])
    ).append_column(pa.field("vwap", pa.float64()), pa.array([100.25]))
    table.append(with_vwap)

    new = all_rows(table)
    assert new.num_rows == 6 and new["vwap"].to_pylist() == [None] * 6
    sol = get_candles(table, "BINANCE:SOL/USDT", "1m", T0, T0 + DAY)
    assert sol["vwap"].to_pylist() == [100.25]
    old = all_rows(old_reader)  # reads with the schema it loaded: new files, no new column
    assert old.num_rows == 3 and "vwap" not in old.column_names
    old_reader.refresh()
    assert all_rows(old_reader).num_rows == 6
    compact(table, min_files=2)  # compaction carries the new column along
    assert get_candles(table, "BINANCE:SOL/USDT", "1m", T0, T0 + DAY)["vwap"].to_pylist() == [
        100.25
    ]


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A loopback server speaking the S3 API (moto), with a bucket ``lake``."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="lake")
    try:
        yield url
    finally:
        server.stop()


def test_the_lake_on_an_s3_compatible_store(tmp_path: Path, s3_endpoint: str) -> None:
    cfg = Settings(
        home=tmp_path / "home",
        lake={
            "warehouse": "s3://lake/warehouse",
            "properties": {
                "s3.endpoint": s3_endpoint,
                "s3.access-key-id": "test",
                "s3.secret-access-key": "test",
                "s3.region": "us-east-1",
            },
        },
    )
    table = ohlc_table(open_catalog(cfg))
    assert table.location().startswith("s3://lake/warehouse/")
    live_minutes(table, range(0, 10))
    assert compact(table, min_files=2).files_after == 2
    expire(table, now_ms() + 1, keep_last=1)
    assert all_rows(table).num_rows == 10
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]]
    assert sum(k.endswith(".parquet") for k in keys) == 2


def test_lake_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    live_minutes(ohlc_table(open_catalog(Settings(home=home))), range(0, 12))
    env = {**os.environ, "DEXORDER_HOME": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher", "lake", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    status = run("status")
    assert status.returncode == 0, status.stderr
    assert "24 rows in 24 files over 2 partitions" in " ".join(status.stdout.split())
    done = run("compact", "--min-files", "4")
    assert done.returncode == 0 and "compacted 2 partitions: 24 files → 2" in done.stdout
    assert "nothing to compact" in run("compact").stdout
    expired = run("expire", "--older-than", "0s", "--keep-last", "1")
    assert expired.returncode == 0 and "kept 1" in expired.stdout
    table = ohlc_table(open_catalog(Settings(home=home)))
    assert files_per_partition(table) == (2, 1.0, 1)
    bad = run("expire", "--older-than", "a week")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
    assert "Traceback" not in bad.stderr
