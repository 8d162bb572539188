"""Run the relay: ``python -m services.relay``."""

from __future__ import annotations

import asyncio
import signal

from dexorder.config import load_config
from dexorder.health import serve_health
from dexorder.log import setup_logging
from services.relay.server import Relay, RelayAddresses


async def run() -> None:
    cfg = load_config()
    log = setup_logging("relay", cfg.log_level)
    r = cfg.relay
    addrs = RelayAddresses(
        router=f"tcp://{r.host}:{r.router_port}",
        work=f"tcp://{r.host}:{r.work_port}",
        xsub=f"tcp://{r.host}:{r.xsub_port}",
        xpub=f"tcp://{r.host}:{r.xpub_port}",
    )
    relay = Relay(addrs, frozenset(e.name.upper() for e in cfg.exchanges))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stop)
    health = await serve_health(r.host, r.health_port, "relay", lambda: (True, dict(relay.stats)))
    log.info("listening", router=addrs.router, work=addrs.work, xsub=addrs.xsub, xpub=addrs.xpub)
    try:
        await relay.serve()
    finally:
        await health.cleanup()
        log.info("stopped")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
