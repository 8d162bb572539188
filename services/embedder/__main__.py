"""Run the embedding service: ``python -m services.embedder``."""

from __future__ import annotations

from aiohttp import web

from dexorder.config import ConfigError, load_config
from dexorder.log import setup_logging
from dexorder.tokens import token_keys
from services.embedder.server import Embedder, build_app


def main() -> None:
    try:
        cfg = load_config()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    log = setup_logging("embedder", cfg.log_level)
    e = cfg.embedder
    log.info("listening", url=f"http://{e.host}:{e.port}")
    web.run_app(
        build_app(Embedder(token_keys(cfg))),
        host=e.host,
        port=e.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
