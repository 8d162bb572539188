"""Running a part as a process: signals, the health endpoint, orderly shutdown."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from dexorder.health import HealthCheck, serve_health


async def run_part(
    part: str,
    health_port: int,
    check: HealthCheck,
    main: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    host: str = "127.0.0.1",
) -> None:
    """Serve ``/healthz`` and ``/metrics``, run ``main`` until SIGINT/SIGTERM call ``stop``."""
    log = structlog.get_logger(part=part)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    health = await serve_health(host, health_port, part, check)
    try:
        await main()
    finally:
        await health.cleanup()
        log.info("stopped")


def main(run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry point of a part: run it; bad configuration is one clear line and exit code 2."""
    from dexorder.config import ConfigError

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
