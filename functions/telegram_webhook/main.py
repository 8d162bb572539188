"""The Telegram webhook (replies through the Bot API): the gateway's /telegram/webhook
handler as a function on its own.

``functions-framework --asgi --source telegram_webhook/main.py --target telegram_webhook \
--signature-type http``
"""

from __future__ import annotations

import functions_framework.aio as ff
from starlette.requests import Request
from starlette.responses import Response

from gateway.function_settings import FunctionSettings
from gateway.standalone import StandaloneHandlers

config = FunctionSettings()
handlers = StandaloneHandlers(config, "/telegram/webhook")


@ff.http
async def telegram_webhook(request: Request) -> Response:
    return await handlers.handle(request)
