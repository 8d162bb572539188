"""Chat over HTTP (one message, one reply): the gateway's /api/chat handler as a function
on its own. The WebSocket chat needs a long-lived connection: the gateway Service serves it.

``functions-framework --asgi --source chat/main.py --target chat --signature-type http``
"""

from __future__ import annotations

import functions_framework.aio as ff
from starlette.requests import Request
from starlette.responses import Response

from gateway.function_settings import FunctionSettings
from gateway.standalone import StandaloneHandlers

config = FunctionSettings()
handlers = StandaloneHandlers(config, "/api/chat")


@ff.http
async def chat(request: Request) -> Response:
    return await handlers.handle(request)
