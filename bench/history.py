"""(d) History: backfill, query, the Iceberg writer, and compaction.

Figures, each beside a baseline measured in the same run:

* backfill of one year of 1m candles (525,600) for one ticker, request to
  ``HistoryReady``, through the relay, the ingestor (CCXT paging the exchange
  emulator), Kafka and the lake writer; baseline: CCXT paging the same year
  from the emulator alone (the exchange's rate limit sets that floor);
* query of one month of 1m candles with :func:`get_candles`, p50; baseline:
  pyarrow reading the same data files directly (no Iceberg planning);
* writer rows/s from Kafka into the lake; baseline: one pyiceberg append of
  the same rows;
* files per partition after a simulated day of live 1m candles for 20
  tickers, before and after compaction. The day's files are those the live
  writer leaves (one per ticker per minute); they are registered in hourly
  commits rather than 1,440 writer commits, which would only make the
  benchmark slow;
* a live writer commit (one minute of 20 tickers) on the compacted table.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaProducer

from bench.common import broker, free_port, pct, row, topics
from dexorder.client import backfill
from dexorder.config import Settings, load_config, tcp_address
from dexorder.exchanges import make_exchange
from dexorder.lake.query import get_candles
from dexorder.lake.table import ARROW_SCHEMA, ohlc_table, open_catalog
from dexorder.schemas import Candle, OhlcBatch, encode
from dexorder.topics import MARKET_OHLC_BACKFILL
from launcher.ephemeral import ephemeral_env, in_environment, start_platform
from streaming.lake_maintenance import compact, files_per_partition
from streaming.lake_rows import PendingBatch
from streaming.lake_writer import LakeWriter, commit_batch

MIN = 60_000
DAY = 86_400_000
YEAR_START = 1_672_531_200_000  # 2023-01-01
YEAR_END = YEAR_START + 365 * DAY
MONTH = 30 * DAY
DAY0 = 1_704_067_200_000  # 2024-01-01, the simulated live day
LIVE_TICKERS = [f"BINANCE:L{i:02d}/USDT" for i in range(20)]


async def _ccxt_year(cfg: Settings) -> float:
    """Seconds for CCXT alone to page the year from the emulator."""
    exchange = make_exchange("binance", cfg.emulator_url, enableRateLimit=True)
    try:
        await exchange.load_markets()
        t0, since = time.perf_counter(), YEAR_START
        while since < YEAR_END:
            page = await exchange.fetch_ohlcv("ETH/USDT", "1m", since=since, limit=1000)
            since = page[-1][0] + MIN
        return time.perf_counter() - t0
    finally:
        await exchange.close()


def _query(cfg: Settings) -> tuple[list[float], list[float], int]:
    table = ohlc_table(open_catalog(cfg))
    start, end = YEAR_START + 3 * MONTH, YEAR_START + 4 * MONTH
    files = table.inspect.data_files().select(["file_path", "partition"]).to_pylist()
    month = [
        f["file_path"].removeprefix("file://")
        for f in files
        if f["partition"]["ticker"] == "BINANCE:BTC/USDT"
        and start <= _ms(f["partition"]["open_day"]) < end
    ]
    lake, raw, rows = [], [], 0
    for _ in range(25):
        t0 = time.perf_counter()
        rows = get_candles(table, "BINANCE:BTC/USDT", "1m", start, end).num_rows
        lake.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        pq.read_table(month, partitioning=None).sort_by("open_time")
        raw.append((time.perf_counter() - t0) * 1000)
    return lake, raw, rows


def _ms(day: date) -> int:
    return (day - date(1970, 1, 1)).days * DAY


async def _writer_rate(home: Path) -> tuple[float, float, int]:
    """Rows/s of the lake writer from Kafka; and of one bare pyiceberg append of them."""
    with broker() as bootstrap:
        await topics(bootstrap)  # waits for the broker to answer
        return await _writer_rate_on(Settings(home=home), bootstrap)


async def _writer_rate_on(cfg: Settings, bootstrap: str) -> tuple[float, float, int]:
    pages = [
        OhlcBatch(
            request_id="bench",
            ticker="BINANCE:W/USDT",
            timeframe="1m",
            rows=[
                (YEAR_START + (p * 1000 + k) * MIN, 1.0, 2.0, 0.5, 1.5, 3.0, 1) for k in range(1000)
            ],
        )
        for p in range(300)
    ]
    n = 300 * 1000
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    for page in pages:
        await producer.send(MARKET_OHLC_BACKFILL, encode(page), key=page.ticker.encode())
    await producer.stop()
    writer = LakeWriter(
        bootstrap=bootstrap,
        relay_xsub=tcp_address("127.0.0.1", free_port()),  # nobody listens: no backfill ends here
        open_table=lambda: ohlc_table(open_catalog(cfg)),
        group_id="bench-writer",
    )
    task = asyncio.create_task(writer.run())
    while not writer.ready:  # joining the consumer group is start-up, not throughput
        await asyncio.sleep(0.001)
    t0 = time.perf_counter()
    while writer.counters["rows_written"] < n:
        await asyncio.sleep(0.01)
    writer_s = time.perf_counter() - t0
    writer.stop()
    await task
    # baseline: the same rows, one append, into a table of their own
    with tempfile.TemporaryDirectory() as tmp:
        bare = ohlc_table(open_catalog(Settings(home=Path(tmp))))
        batch = PendingBatch()
        for page in pages:
            batch.add_ohlc(page)
        arrow = batch.to_arrow()
        t0 = time.perf_counter()
        bare.append(arrow)
        append_s = time.perf_counter() - t0
    return n / writer_s, n / append_s, n


def _simulated_day(home: Path) -> tuple[tuple[int, float, int], tuple[int, float, int], float, int]:
    """Files per partition of a day of live minutes, before and after compaction."""
    cfg = Settings(home=home)
    table = ohlc_table(open_catalog(cfg))
    out = home / "live-files"
    out.mkdir(parents=True)
    for hour in range(24):
        paths = []
        for m in range(hour * 60, hour * 60 + 60):
            for i, ticker in enumerate(LIVE_TICKERS):
                rows = _closed_at(ticker, DAY0 + (m + 1) * MIN, 100.0 + i)
                path = str(out / f"{m:04d}-{i:02d}.parquet")
                pq.write_table(rows, path)
                paths.append(path)
        table.add_files(paths)
    before = files_per_partition(table)
    t0 = time.perf_counter()
    compact(table, min_files=2)
    compact_s = time.perf_counter() - t0
    table.refresh()
    return before, files_per_partition(table), compact_s, table.scan().to_arrow().num_rows


def _closed_at(ticker: str, now: int, price: float) -> pa.Table:
    """The candles of ``ticker`` that close at ``now`` (1m always; 5m… when due)."""
    ex = ticker.split(":")[0]
    data: dict[str, list[object]] = {name: [] for name in ARROW_SCHEMA.names}
    for tf, ms in (("1m", MIN), ("5m", 5 * MIN), ("15m", 15 * MIN), ("1h", 60 * MIN)):
        if now % ms == 0 and now - ms >= DAY0:
            for name, value in zip(
                ARROW_SCHEMA.names,
                (ex, ticker, tf, now - ms, price, price + 1, price - 1, price, 2.0, 4, "live"),
                strict=True,
            ):
                data[name].append(value)
    data["open_time"] = [t * 1000 for t in data["open_time"]]  # type: ignore[operator]
    return pa.table(
        {
            **data,
            "open_time": pa.array(data["open_time"], pa.timestamp("us", tz="UTC")),
        },
        schema=ARROW_SCHEMA,
    )


def _live_commit(home: Path) -> list[float]:
    """ms per live commit (one closed minute of 20 tickers) on the compacted day."""
    table = ohlc_table(open_catalog(Settings(home=home)))
    times = []
    for m in range(20):
        batch = PendingBatch()
        for ticker in LIVE_TICKERS:
            ex, sym = ticker.split(":")
            batch.add_candle(
                Candle(
                    exchange=ex,
                    symbol=sym,
                    timeframe="1m",
                    open_time=DAY0 + DAY + m * MIN,
                    open=1,
                    high=2,
                    low=0.5,
                    close=1.5,
                    volume=1,
                    trades=1,
                    closed=True,
                )
            )
        batch.offsets = {"market.candles:0": m}
        t0 = time.perf_counter()
        commit_batch(table, batch)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> dict[str, float]:
    print("(d) history: backfill, query, writer, compaction")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = ephemeral_env(Path(tmp) / "home", DEXORDER_LAKE__MAINTENANCE_INTERVAL_S="0")
        with in_environment(env):
            p = start_platform(env)
            try:
                cfg = load_config()
                t0 = time.perf_counter()
                ready = asyncio.run(
                    backfill(
                        "BINANCE:BTC/USDT", "1m", YEAR_START, YEAR_END, config=cfg, timeout_s=600
                    )
                )
                backfill_s = time.perf_counter() - t0
                if ready.error:
                    raise SystemExit(f"backfill failed: {ready.error}")
                ccxt_s = asyncio.run(_ccxt_year(cfg))
                row(
                    "backfill 1 year of 1m, request → HistoryReady",
                    f"{backfill_s:.1f} s",
                    f"{ready.rows:,} rows; CCXT paging alone {ccxt_s:.1f} s "
                    f"({backfill_s / ccxt_s:.2f}x)",
                )
                results["backfill_s"] = backfill_s

                lake, raw, rows = _query(cfg)
                row(
                    "query 1 month of 1m (get_candles), p50",
                    f"{pct(lake, 50):.1f} ms",
                    f"{rows:,} rows, p99 {pct(lake, 99):.1f} ms; "
                    f"pyarrow on the same files {pct(raw, 50):.1f} ms",
                )
                results["query_p50_ms"] = pct(lake, 50)

            finally:
                p.stop()
        rate, bare, n = asyncio.run(_writer_rate(Path(tmp) / "writer"))
        row(
            "lake writer, Kafka → Iceberg",
            f"{rate / 1000:,.0f}k rows/s",
            f"{n:,} rows; one bare pyiceberg append {bare / 1000:,.0f}k rows/s "
            f"({rate / bare:.2f}x)",
        )
        results["writer_rows_s"] = rate
        day_home = Path(tmp) / "day"
        before, after, compact_s, day_rows = _simulated_day(day_home)
        row(
            "files per partition, a live day of 20 tickers",
            f"{before[1]:,.0f} → {after[1]:,.0f}",
            f"{before[0]} partitions, {day_rows:,} rows; compaction {compact_s:.1f} s",
        )
        results["files_before"], results["files_after"] = before[1], after[1]
        live = _live_commit(day_home)
        row(
            "live writer commit (1 minute, 20 tickers), p50",
            f"{pct(live, 50):.0f} ms",
            f"p99 {pct(live, 99):.0f} ms",
        )
    return results


if __name__ == "__main__":
    main()
