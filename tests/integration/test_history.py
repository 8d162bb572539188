"""The history path for real: client → relay → ingestor (CCXT) → Kafka → writer → Iceberg."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import psycopg2
import pytest

from dexorder.client import backfill
from dexorder.lake.query import get_candles
from dexorder.lake.table import ohlc_table, open_catalog
from launcher.ephemeral import RunningPlatform, start_platform
from services.exchange_emulator.simulator import DEFAULT_SYMBOLS, HISTORY_START_MS, MarketSimulator
from tests.postgres import fresh_database

pytestmark = pytest.mark.integration

DAY = 86_400_000
HOUR = 3_600_000
D0 = 1_704_067_200_000  # 2024-01-01


async def emulator_stats(p: RunningPlatform) -> dict[str, int]:
    async with aiohttp.ClientSession() as s:
        data: dict[str, int] = await (await s.get(f"{p.cfg.emulator_url}/emulator/stats")).json()
        return data


def lake(p: RunningPlatform):  # type: ignore[no-untyped-def]
    return ohlc_table(open_catalog(p.cfg), p.cfg.lake.namespace)


async def test_backfill_writes_the_exchange_history(shared_platform: RunningPlatform) -> None:
    progress: list[tuple[int, int]] = []
    ready = await backfill(
        "BINANCE:BTC/USDT",
        "1h",
        D0,
        D0 + 2 * DAY,
        config=shared_platform.cfg,
        timeout_s=60,
        on_progress=lambda f, t: progress.append((f, t)),
    )
    assert ready.error is None, ready.error
    assert (ready.rows, ready.start, ready.end, ready.gaps) == (48, D0, D0 + 2 * DAY, [])
    assert progress and progress[-1] == (48, 48)

    rows = get_candles(lake(shared_platform), "BINANCE:BTC/USDT", "1h", D0, D0 + 2 * DAY)
    expected = MarketSimulator(seed=42).klines(DEFAULT_SYMBOLS[0], HOUR, D0, D0 + 2 * DAY)
    assert rows.num_rows == 48
    assert [t.timestamp() * 1000 for t in rows["open_time"].to_pylist()] == list(expected[:, 0])
    assert rows["open"].to_pylist() == pytest.approx(list(expected[:, 1]))
    assert rows["close"].to_pylist() == pytest.approx(list(expected[:, 4]))
    assert rows["volume"].to_pylist() == pytest.approx(list(expected[:, 5]), rel=1e-6)
    assert set(rows["source"].to_pylist()) == {"backfill"}

    # a timeframe not stored is derived from 1m
    await backfill("BINANCE:BTC/USDT", "1m", D0, D0 + 4 * HOUR, config=shared_platform.cfg)
    four = get_candles(lake(shared_platform), "BINANCE:BTC/USDT", "4h", D0, D0 + 4 * HOUR)
    minutes = get_candles(lake(shared_platform), "BINANCE:BTC/USDT", "1m", D0, D0 + 4 * HOUR)
    assert minutes.num_rows == 240
    assert four.num_rows == 1 and four["source"].to_pylist() == ["derived:1m"]
    assert four["high"][0].as_py() == max(minutes["high"].to_pylist())
    assert four["volume"][0].as_py() == pytest.approx(sum(minutes["volume"].to_pylist()))


async def test_complete_range_is_answered_without_the_exchange(
    shared_platform: RunningPlatform,
) -> None:
    first = await backfill("BINANCE:ETH/USDT", "1h", D0, D0 + DAY, config=shared_platform.cfg)
    assert first.error is None and first.rows == 24
    before = (await emulator_stats(shared_platform))["rest_requests"]
    again = await backfill("BINANCE:ETH/USDT", "1h", D0, D0 + DAY, config=shared_platform.cfg)
    assert again.error is None and again.rows == 24
    assert (await emulator_stats(shared_platform))["rest_requests"] == before


async def test_overlapping_request_fetches_only_the_missing_part(
    shared_platform: RunningPlatform,
) -> None:
    await backfill("BINANCE:SOL/USDT", "1h", D0, D0 + 2 * DAY, config=shared_platform.cfg)
    progress: list[tuple[int, int]] = []
    ready = await backfill(
        "BINANCE:SOL/USDT",
        "1h",
        D0 + DAY,
        D0 + 3 * DAY,
        config=shared_platform.cfg,
        on_progress=lambda f, t: progress.append((f, t)),
    )
    assert ready.error is None and ready.rows == 48
    assert progress[-1] == (24, 24)  # only the third day was fetched
    rows = get_candles(lake(shared_platform), "BINANCE:SOL/USDT", "1h", D0, D0 + 3 * DAY)
    times = rows["open_time"].to_pylist()
    assert len(times) == 72 == len(set(times))


async def test_exchange_gaps_are_reported(shared_platform: RunningPlatform) -> None:
    start = HISTORY_START_MS - DAY  # the exchange's history starts a day later
    ready = await backfill(
        "BINANCE:BTC/USDT", "1h", start, start + 2 * DAY, config=shared_platform.cfg
    )
    assert ready.error is None
    assert ready.gaps == [(start, HISTORY_START_MS)]
    assert ready.rows == 24


@pytest.mark.parametrize(
    ("ticker", "tf", "start", "end", "error"),
    [
        ("BINANCE:NOPE/USDT", "1h", D0, D0 + DAY, "unknown symbol"),
        ("KRAKEN:BTC/USD", "1h", D0, D0 + DAY, "unknown_exchange"),
        ("BINANCE:BTC/USDT", "1h", 4_000_000_000_000, 4_000_000_000_000 + DAY, "future_range"),
        ("BINANCE:BTC/USDT", "1h", D0 + DAY, D0, "bad_range"),
    ],
)
async def test_bad_requests_come_back_as_history_ready_errors(
    shared_platform: RunningPlatform, ticker: str, tf: str, start: int, end: int, error: str
) -> None:
    ready = await backfill(ticker, tf, start, end, config=shared_platform.cfg, timeout_s=60)
    assert ready.error is not None and error in ready.error
    assert ready.rows == 0


async def test_exchange_down_comes_back_as_an_error(platform: RunningPlatform) -> None:
    async with aiohttp.ClientSession() as s:
        await s.post(f"{platform.cfg.emulator_url}/emulator/down", json={"down": True})
    ready = await backfill(
        "BINANCE:XRP/USDT", "1h", D0, D0 + DAY, config=platform.cfg, timeout_s=60
    )
    assert ready.error is not None and "exchange unavailable" in ready.error


async def test_no_ingestor_times_out_with_an_error(isolated_env: dict[str, str]) -> None:
    p = start_platform(isolated_env, only={"kafka", "relay"})
    try:
        ready = await backfill("BINANCE:BTC/USDT", "1h", D0, D0 + DAY, config=p.cfg, timeout_s=2)
        assert ready.error is not None and "no answer within 2s" in ready.error
    finally:
        p.stop()


@pytest.fixture
def postgres_catalog(
    isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh PostgreSQL database as the Iceberg catalog."""
    with fresh_database() as uri:
        monkeypatch.setenv("DEXORDER_LAKE__CATALOG_URI", uri)
        isolated_env["DEXORDER_LAKE__CATALOG_URI"] = uri
        yield uri


async def test_backfill_with_a_postgres_catalog(
    postgres_catalog: str, isolated_env: dict[str, str]
) -> None:
    p = start_platform(isolated_env)
    try:
        assert p.cfg.lake.catalog_uri == postgres_catalog
        ready = await backfill("BINANCE:BNB/USDT", "1h", D0, D0 + DAY, config=p.cfg)
        assert ready.error is None and ready.rows == 24
        assert get_candles(lake(p), "BINANCE:BNB/USDT", "1h", D0, D0 + DAY).num_rows == 24
        conn = psycopg2.connect(postgres_catalog.replace("postgresql+psycopg2", "postgresql"))
        cur = conn.cursor()
        cur.execute("SELECT table_namespace, table_name FROM iceberg_tables")
        assert cur.fetchall() == [("market", "ohlc")]
        conn.close()
    finally:
        p.stop()


def test_history_command(shared_platform: RunningPlatform, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    import pyarrow.csv as pacsv

    env = {**os.environ, **shared_platform.env}
    out = tmp_path / "btc.csv"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher",
            "history",
            "BINANCE:BTC/USDT",
            "--tf",
            "1h",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "wrote 24 candles" in res.stdout
    assert pacsv.read_csv(out).num_rows == 24
    bad = subprocess.run(
        [sys.executable, "-m", "launcher", "history", "BINANCE:BTC/USDT", "--from", "yesterday"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid date" in bad.stderr and "Traceback" not in bad.stderr

    def history(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher", "history", "BINANCE:BTC/USDT", "--tf", "1h", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    day = ("--from", "2024-01-01", "--to", "2024-01-02")
    now = history(*day, "--as-of", "2100-01-01", "--out", str(tmp_path / "asof.parquet"))
    assert now.returncode == 0 and "wrote 24 candles" in now.stdout
    before = history(*day, "--as-of", "2001-01-01")
    assert before.returncode == 1 and "no snapshot as of 2001-01-01" in before.stderr
