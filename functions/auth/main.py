"""Sign-up, login, sessions, personal access tokens, Telegram link codes, delete my data:
the gateway's handlers under /api/auth/, /api/me, /api/tokens and /api/telegram/link-code,
as a function on its own.

``functions-framework --asgi --source auth/main.py --target auth --signature-type http``
"""

from __future__ import annotations

import functions_framework.aio as ff
from starlette.requests import Request
from starlette.responses import Response

from gateway.function_settings import FunctionSettings
from gateway.standalone import StandaloneHandlers

config = FunctionSettings()
handlers = StandaloneHandlers(
    config, "/api/auth/", "/api/me", "/api/tokens", "/api/telegram/link-code"
)


@ff.http
async def auth(request: Request) -> Response:
    return await handlers.handle(request)
