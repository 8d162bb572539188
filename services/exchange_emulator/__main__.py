"""Run the exchange emulator: ``python -m services.exchange_emulator``."""

from __future__ import annotations

from aiohttp import web

from dexorder.config import Settings
from dexorder.process import serve_app
from services.exchange_emulator.server import EmulatorState, build_app
from services.exchange_emulator.simulator import MarketSimulator


def app(cfg: Settings) -> tuple[web.Application, str, int]:
    em = cfg.emulator
    state = EmulatorState(
        MarketSimulator(seed=em.seed, trade_rate=em.trade_rate),
        weight_limit=em.weight_limit_per_minute,
    )
    return build_app(state), em.host, em.port


if __name__ == "__main__":
    serve_app("exchange-emulator", app)
