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
        router=f"tcp://{r.host}:{r.router_port}",
        work=f"tcp://{r.host}:{r.work_port}",
        xsub=f"tcp://{r.host}:{r.xsub_port}",
        xpub=f"tcp://{r.host}:{r.xpub_port}",
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
        "relay", r.health_port, lambda: (True, dict(relay.stats)), relay.serve, relay.stop
    )


def main() -> None:
    process.main(run)


if __name__ == "__main__":
    main()
