"""Run the embedding service: ``python -m services.embedder``."""

from __future__ import annotations

from aiohttp import web

from dexorder.config import Settings
from dexorder.process import serve_app
from services.embedder.server import Embedder, build_app


def app(cfg: Settings) -> tuple[web.Application, str, int]:
    return build_app(Embedder.from_config(cfg)), cfg.embedder.host, cfg.embedder.port


if __name__ == "__main__":
    serve_app("embedder", app)
