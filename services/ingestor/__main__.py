"""Run an ingestor: ``python -m services.ingestor [--exchange BINANCE]``."""

from __future__ import annotations

import argparse

from dexorder import process
from dexorder.config import load_config
from dexorder.kafka import ensure_topics
from dexorder.log import setup_logging
from dexorder.process import run_part
from services.ingestor.service import Ingestor


async def run(exchange_name: str) -> None:
    cfg = load_config()
    log = setup_logging("ingestor", cfg.log_level)
    ex = cfg.exchange_config(exchange_name)
    ingestor = Ingestor.from_config(cfg, ex)
    await ensure_topics(ingestor.bootstrap)
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
        host=cfg.health_host,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="DexOrder ingestor: exchange trades into Kafka")
    parser.add_argument("--exchange", default="BINANCE", help="exchange name from the config")
    args = parser.parse_args()
    process.main(lambda: run(args.exchange))


if __name__ == "__main__":
    main()
