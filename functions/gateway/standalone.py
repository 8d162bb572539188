"""The gateway's HTTP handlers as functions-framework functions, each in its own process.

In ``dexorder up`` (and in the cluster's ``gateway`` Service, which also serves the
WebSocket chat) one process serves every route. A function folder (``auth/``, ``chat/``,
``telegram_webhook/``) serves only its own routes on its own, under functions-framework:
the same handlers, the gateway built once in that process from its configuration.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dexorder import telemetry
from gateway.function_settings import FunctionSettings


class StandaloneHandlers:
    """Routes under ``prefixes`` of a gateway built in this process on first use."""

    def __init__(self, config: FunctionSettings, *prefixes: str) -> None:
        self.config = config
        self.prefixes = prefixes
        self._app: Any = None
        self._gateway: Any = None
        self._lock = asyncio.Lock()

    async def app(self) -> Any:
        async with self._lock:
            if self._app is None:
                from gateway.api.app import build_app
                from gateway.service import Gateway

                cfg = self.config.get()
                telemetry.setup(cfg.telemetry, "dexorder-gateway")
                self._gateway = Gateway.build(cfg)
                await self._gateway.start(events=False)
                self._app = build_app(self._gateway, manage=False)
            return self._app

    async def handle(self, request: Request) -> Response:
        if not request.url.path.startswith(self.prefixes):
            return JSONResponse({"error": "not served by this function"}, status_code=404)
        app = await self.app()
        start: dict[str, Any] = {"status": 500, "headers": []}
        chunks: list[bytes] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(request.scope, request.receive, send)
        response = Response(b"".join(chunks), status_code=start["status"])
        response.raw_headers = list(start["headers"])
        return response

    async def close(self) -> None:
        if self._gateway is not None:
            await self._gateway.close()
            self._gateway = self._app = None
