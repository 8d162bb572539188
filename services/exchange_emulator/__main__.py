"""Run the exchange emulator: ``python -m services.exchange_emulator``."""

from __future__ import annotations

from aiohttp import web

from dexorder.config import Settings
from dexorder.process import serve_app
from services.exchange_emulator.server import EmulatorState, build_app


def app(cfg: Settings) -> tuple[web.Application, str, int]:
    em = cfg.emulator
    return build_app(EmulatorState.from_section(em)), em.host, em.port


if __name__ == "__main__":
    serve_app("exchange-emulator", app)
