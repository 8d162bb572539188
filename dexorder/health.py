"""A part's HTTP health and metrics endpoint (``/healthz`` and ``/metrics``).

``dexorder status`` reads ``/healthz``; Prometheus scrapes ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

#: Returns ``(healthy, details)``; details are shown by ``dexorder status``.
HealthCheck = Callable[[], tuple[bool, dict[str, object]]]


async def serve_health(host: str, port: int, part: str, check: HealthCheck) -> web.AppRunner:
    """Start the endpoint on ``host:port``; the caller cleans up the returned runner."""

    async def healthz(_: web.Request) -> web.Response:
        ok, details = check()
        return web.json_response(
            {"part": part, "healthy": ok, **details}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
