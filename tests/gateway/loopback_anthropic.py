"""A loopback server speaking Anthropic's Messages API (``POST /v1/messages``), streaming
included, so the official SDK runs unmodified against scripted answers."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from tests.gateway.served import serve_app

API_KEY = "sk-ant-test-loopback"


class MessagesApi:
    """Answers each request with the next scripted reply; keeps the requests it got.

    A reply is a list of content blocks (``{"type": "text", "text"}`` or
    ``{"type": "tool_use", "id", "name", "input"}``), or ``(status, error_type)``, or
    ``(status, error_type, headers)`` (a ``retry-after``, say), or ``("stream", error_type)``:
    a stream that begins (200) and then sends an ``error`` event. ``times`` is when each
    request arrived (``time.monotonic()``), for what the client waited between them.
    """

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []

    async def messages(self, request: web.Request) -> web.StreamResponse:
        # the SDK sends the key as x-api-key or (2.x) as a bearer token; the API takes both
        given = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if given != API_KEY:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        body = await request.json()
        self.requests.append(body)
        self.times.append(time.monotonic())
        if not self.replies:
            return _error(500, "api_error", "no scripted reply left")
        reply = self.replies.pop(0)
        if isinstance(reply, tuple) and reply[0] == "stream":
            return await _stream_error(request, reply[1])
        if isinstance(reply, tuple):
            return _error(reply[0], reply[1], "scripted failure", *reply[2:])
        stop = "tool_use" if any(b["type"] == "tool_use" for b in reply) else "end_turn"
        usage_in, usage_out = 100 + len(json.dumps(body)) // 40, 10 + len(json.dumps(reply)) // 8
        message = {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": reply,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
        }
        if not body.get("stream"):
            return web.json_response(message)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(kind: str, data: dict[str, Any]) -> None:
            await resp.write(
                f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            )

        await event(
            "message_start",
            {
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": usage_in, "output_tokens": 1},
                }
            },
        )
        for i, block in enumerate(reply):
            if block["type"] == "text":
                await event(
                    "content_block_start",
                    {"index": i, "content_block": {"type": "text", "text": ""}},
                )
                words = block["text"].split(" ")
                for n, word in enumerate(words):
                    piece = word if n == len(words) - 1 else word + " "
                    await event(
                        "content_block_delta",
                        {"index": i, "delta": {"type": "text_delta", "text": piece}},
                    )
            else:
                await event(
                    "content_block_start",
                    {"index": i, "content_block": {**block, "input": {}}},
                )
                raw = json.dumps(block["input"])
                for cut in range(0, len(raw), 7):  # partial JSON, as the API sends it
                    await event(
                        "content_block_delta",
                        {
                            "index": i,
                            "delta": {
                                "type": "input_json_delta",
                                "partial_json": raw[cut : cut + 7],
                            },
                        },
                    )
            await event("content_block_stop", {"index": i})
        await event(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage_out},
            },
        )
        await event("message_stop", {})
        return resp


async def _stream_error(request: web.Request, kind: str) -> web.StreamResponse:
    """An error in a stream already begun: the SDK cannot retry it."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    error = {"type": "error", "error": {"type": kind, "message": "scripted failure"}}
    await resp.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
    return resp


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}},
        status=status,
        headers=headers,
    )


@contextlib.asynccontextmanager
async def serve_messages_api() -> AsyncIterator[tuple[str, MessagesApi]]:
    api = MessagesApi()
    app = web.Application()
    app.router.add_post("/v1/messages", api.messages)
    async with serve_app(app) as url:
        yield url, api
