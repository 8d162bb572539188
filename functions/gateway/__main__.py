"""``python -m gateway``: the gateway on ``gateway.host:gateway.port`` (``dexorder up`` runs it)."""

from __future__ import annotations

import uvicorn

from dexorder import telemetry
from dexorder.config import load_config
from dexorder.log import setup_logging
from dexorder.process import main
from gateway.api.app import build_app
from gateway.service import Gateway


async def run() -> None:
    cfg = load_config()
    setup_logging("gateway", cfg.log_level)
    telemetry.setup(cfg.telemetry, "dexorder-gateway")
    app = build_app(Gateway.build(cfg))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=cfg.gateway.host,
            port=cfg.gateway.port,
            log_level="warning",
            ws="websockets-sansio",
        )
    )
    await server.serve()


if __name__ == "__main__":
    main(run)
