"""Run the local stream runner: ``python -m streaming``."""

from __future__ import annotations

from dexorder import process
from dexorder.config import load_config
from dexorder.kafka import ensure_topics
from dexorder.log import setup_logging
from dexorder.process import run_part
from dexorder.relay_keys import publisher as relay_publisher
from streaming.runner import StreamRunner


async def run() -> None:
    cfg = load_config()
    log = setup_logging("stream", cfg.log_level)
    if not cfg.kafka.bootstrap_servers:
        raise SystemExit("kafka.bootstrap_servers is not set (dexorder up sets it)")
    await ensure_topics(cfg.kafka.bootstrap_servers)
    s = cfg.stream
    runner = StreamRunner(
        bootstrap=cfg.kafka.bootstrap_servers,
        relay_xsub=relay_publisher(cfg, "stream"),
        state_dir=cfg.state_dir("stream"),
        group_id=s.group_id,
        allowed_lateness_ms=s.allowed_lateness_ms,
        live_update_interval_ms=s.live_update_interval_ms,
        checkpoint_interval_ms=s.checkpoint_interval_ms,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        max_skew_ms=cfg.market_data.max_clock_skew_ms,
    )
    log.info("starting", group=s.group_id, lateness_ms=s.allowed_lateness_ms)
    await run_part(
        "stream", s.health_port, lambda: (runner.ready, runner.health()), runner.run, runner.stop
    )


def main() -> None:
    process.main(run)


if __name__ == "__main__":
    main()
