"""A loopback Telegram Bot API (``/bot<token>/<method>``) that records what the bot sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from tests.gateway.served import serve_app

BOT_TOKEN = "123456:TEST-loopback-token"


class BotApiServer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Condition()
        self._next_id = 1

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != BOT_TOKEN:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            params: dict[str, Any] = {}
            for k, v in form.items():
                params[k] = v.file.read() if isinstance(v, web.FileField) else v
        else:
            params = await request.json()
        if "chat_id" not in params:
            return _bad("Bad Request: chat_id is empty")
        if method == "sendMessage":
            text = params.get("text", "")
            if not text:
                return _bad("Bad Request: message text is empty")
            if len(text) > 4096:
                return _bad("Bad Request: message is too long")
        elif method == "sendPhoto":
            photo = params.get("photo")
            if not isinstance(photo, bytes) or not photo.startswith(b"\x89PNG"):
                return _bad("Bad Request: wrong file identifier/HTTP URL specified")
        elif method != "sendChatAction":
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        async with self._changed:
            self.calls.append((method, params))
            self._changed.notify_all()
        self._next_id += 1
        return web.json_response(
            {
                "ok": True,
                "result": {"message_id": self._next_id} if method != "sendChatAction" else True,
            }
        )

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [p for m, p in self.calls if m == method]

    async def wait_for(self, method: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The first ``count`` calls of ``method``, once made."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.sent(method)) >= count)
        return self.sent(method)[:count]


def _bad(description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": 400, "description": description}, status=400
    )


@contextlib.asynccontextmanager
async def serve_bot_api() -> AsyncIterator[tuple[str, BotApiServer]]:
    api = BotApiServer()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", api.handle)
    async with serve_app(app) as url:
        yield url, api


def update(update_id: int, user_id: int, text: str, chat_id: int | None = None) -> dict[str, Any]:
    """A text-message Update as Telegram sends it."""
    msg: dict[str, Any] = {
        "message_id": 1000 + update_id,
        "from": {
            "id": user_id,
            "is_bot": False,
            "first_name": "Alice",
            "username": "alice",
            "language_code": "en",
        },
        "chat": {
            "id": chat_id or user_id,
            "first_name": "Alice",
            "username": "alice",
            "type": "private",
        },
        "date": 1764079200,
        "text": text,
    }
    if text.startswith("/"):
        msg["entities"] = [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
    if chat_id is not None and chat_id != user_id:
        msg["chat"] = {"id": chat_id, "title": "Traders", "type": "group"}
    return {"update_id": update_id, "message": msg}
