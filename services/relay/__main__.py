"""Run the relay: ``python -m services.relay``."""

from __future__ import annotations

from dexorder import process
from dexorder.config import load_config
from dexorder.log import setup_logging
from dexorder.process import run_part
from services.relay.server import Relay


async def run() -> None:
    cfg = load_config()
    log = setup_logging("relay", cfg.log_level)
    relay = Relay.from_config(cfg)
    addrs, keys = relay.addresses, relay.keys
    log.info(
        "listening",
        router=addrs.router,
        work=addrs.work,
        xsub=addrs.xsub,
        xpub=addrs.xpub,
        publishers=sorted(keys.publishers.values()),
        keyed_subscribers=keys.subscribers is not None,
    )
    await run_part(
        "relay",
        cfg.relay.health_port,
        lambda: (True, dict(relay.counters)),
        relay.serve,
        relay.stop,
        host=cfg.health_host,
    )


def main() -> None:
    process.main(run)


if __name__ == "__main__":
    main()
