"""Run an ingestor: ``python -m services.ingestor [--exchange BINANCE]``."""

from __future__ import annotations

import argparse

from dexorder import process
from dexorder.config import load_config
from dexorder.kafka import ensure_topics
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.log import setup_logging
from dexorder.process import run_part
from dexorder.relay_keys import publisher as relay_publisher
from services.ingestor.service import Ingestor


async def run(exchange_name: str) -> None:
    cfg = load_config()
    log = setup_logging("ingestor", cfg.log_level)
    ex = cfg.exchange_config(exchange_name)
    if not cfg.kafka.bootstrap_servers:
        raise SystemExit("kafka.bootstrap_servers is not set (dexorder up sets it)")
    await ensure_topics(cfg.kafka.bootstrap_servers)
    ingestor = Ingestor(
        exchange_name=ex.name.upper(),
        ccxt_id=ex.ccxt_id,
        bootstrap=cfg.kafka.bootstrap_servers,
        work_address=cfg.relay.work_address,
        relay_xsub=relay_publisher(cfg, "ingestor"),
        symbols=ex.symbols,
        emulator_url=cfg.emulator_url if ex.emulated else None,
        transport=ex.transport,
        lake=lambda: ohlc_table(open_catalog(cfg), cfg.lake.namespace),
        poll_interval_s=ex.poll_interval_ms / 1000,
        shard_index=ex.shard_index,
        shard_count=ex.shard_count,
        max_skew_ms=cfg.market_data.max_clock_skew_ms,
    )
    log.info(
        "starting",
        exchange=ex.name,
        emulated=ex.emulated,
        shard=f"{ex.shard_index}/{ex.shard_count}",
    )
    await run_part(
        f"ingestor-{ex.name.lower()}",
        ex.health_port,
        lambda: (
            ingestor.ready,
            {**ingestor.counters, "streams": ingestor.streaming, "feed": ingestor.feed()},
        ),
        ingestor.run,
        ingestor.stop,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="DexOrder ingestor: exchange trades into Kafka")
    parser.add_argument("--exchange", default="BINANCE", help="exchange name from the config")
    args = parser.parse_args()
    process.main(lambda: run(args.exchange))


if __name__ == "__main__":
    main()
