"""Running a part as a process: signals, the health endpoint, orderly shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from dexorder.config import Settings
from dexorder.health import HealthCheck, serve_health

#: A person's agent exits with this code after a clean idle shutdown (not a crash);
#: the provisioner then starts it again on the next message.
AGENT_IDLE_EXIT_CODE = 42


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def serve_app(part: str, build: Callable[[Settings], tuple[web.Application, str, int]]) -> None:
    """Entry point of a part that is one aiohttp app: ``build(cfg)`` gives the app and where
    it listens; served until SIGINT/SIGTERM. Bad configuration: one line, exit code 2."""
    from dexorder.config import ConfigError, load_config
    from dexorder.log import setup_logging

    try:
        cfg = load_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log = setup_logging(part, cfg.log_level)
    app, host, port = build(cfg)
    log.info("listening", url=f"http://{host}:{port}")
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
