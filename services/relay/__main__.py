"""Run the relay: ``python -m services.relay``."""

from __future__ import annotations

from dexorder import process
from dexorder.config import load_config
from dexorder.log import setup_logging
from dexorder.process import run_part
from dexorder.relay_keys import relay_server_keys
from services.relay.server import Relay, RelayAddresses


async def run() -> None:
    cfg = load_config()
    log = setup_logging("relay", cfg.log_level)
    r = cfg.relay
    addrs = RelayAddresses(
        router=r.router_address, work=r.work_address, xsub=r.xsub_address, xpub=r.xpub_address
    )
    keys = relay_server_keys(cfg)
    relay = Relay(addrs, frozenset(e.name.upper() for e in cfg.exchanges), keys)
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
        "relay", r.health_port, lambda: (True, dict(relay.counters)), relay.serve, relay.stop
    )


def main() -> None:
    process.main(run)


if __name__ == "__main__":
    main()
