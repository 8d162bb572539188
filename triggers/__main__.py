"""``python -m triggers``: the Kafka topics of ``triggers.yaml`` → the gateway's functions.

``python -m triggers kafkasources`` prints the same triggers as Knative KafkaSources.
"""

from __future__ import annotations

import sys

import yaml

from dexorder.config import load_config
from dexorder.log import setup_logging
from dexorder.process import main, run_part
from dexorder.tokens import token_keys
from gateway.platform_calls import platform_token
from triggers.dispatcher import Dispatcher
from triggers.knative import kafka_source
from triggers.spec import load_triggers


async def run() -> None:
    cfg = load_config()
    setup_logging("triggers", cfg.log_level)
    keys = token_keys(cfg)
    dispatcher = Dispatcher.from_config(cfg, load_triggers(), auth=lambda: platform_token(keys))
    await run_part(
        "triggers",
        cfg.gateway.triggers_health_port,
        lambda: (dispatcher.ready.is_set(), dict(dispatcher.counters)),
        dispatcher.run,
        dispatcher.stop,
        host=cfg.health_host,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["kafkasources"]:
        print(yaml.safe_dump_all([kafka_source(t) for t in load_triggers()], sort_keys=False))
    elif sys.argv[1:]:
        print("usage: python -m triggers [kafkasources]", file=sys.stderr)
        raise SystemExit(2)
    else:
        main(run)
