"""Run the exchange emulator: ``python -m services.exchange_emulator``."""

from __future__ import annotations

from aiohttp import web

from dexorder.config import ConfigError, load_config
from dexorder.log import setup_logging
from services.exchange_emulator.server import EmulatorState, build_app
from services.exchange_emulator.simulator import MarketSimulator


def main() -> None:
    try:
        cfg = load_config()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    log = setup_logging("exchange-emulator", cfg.log_level)
    em = cfg.emulator
    sim = MarketSimulator(seed=em.seed, trade_rate=em.trade_rate)
    state = EmulatorState(sim, weight_limit=em.weight_limit_per_minute)
    log.info("listening", url=f"http://{em.host}:{em.port}", seed=em.seed)
    web.run_app(
        build_app(state),
        host=em.host,
        port=em.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
