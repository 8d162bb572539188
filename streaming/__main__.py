"""Run the local stream runner: ``python -m streaming``."""

from __future__ import annotations

from dexorder import process
from dexorder.config import load_config
from dexorder.kafka import ensure_topics
from dexorder.log import setup_logging
from dexorder.process import run_part
from streaming.runner import StreamRunner


async def run() -> None:
    cfg = load_config()
    log = setup_logging("stream", cfg.log_level)
    runner = StreamRunner.from_config(cfg)
    await ensure_topics(runner.bootstrap)
    log.info("starting", group=runner.group_id, lateness_ms=runner.allowed_lateness_ms)
    await run_part(
        "stream",
        cfg.stream.health_port,
        lambda: (runner.ready, runner.health()),
        runner.run,
        runner.stop,
        host=cfg.health_host,
    )


def main() -> None:
    process.main(run)


if __name__ == "__main__":
    main()
