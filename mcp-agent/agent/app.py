"""Serving the agent: streamable HTTP behind bearer auth, or stdio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agent.auth import BearerAuth
from agent.lifecycle import run_until_idle
from agent.person import PersonAgent
from agent.server import build_server


def http_app(person: PersonAgent) -> Any:
    """The ASGI app: ``/mcp`` (MCP streamable HTTP, authenticated) and ``/healthz``."""
    mcp = build_server(person)
    mcp_app = mcp.streamable_http_app(json_response=True, streamable_http_path="/mcp")
    _streams_when_accepted(mcp.session_manager)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"part": "agent", "healthy": True})

    async def wake(_: Request) -> JSONResponse:
        """``POST /wake`` (authenticated): the provisioner is about to hand this agent's
        address to a caller. Served like a call (it resets the idle clock), it promises the
        agent stays for a while; once the agent decided to exit it answers 503, so the
        provisioner waits for the exit and starts a fresh agent instead."""
        if person.activity.exiting:
            return JSONResponse({"error": "this agent is exiting (idle)"}, status_code=503)
        return JSONResponse({"awake": True})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await person.start()
        noting = asyncio.create_task(_note_work(person))
        try:
            async with mcp_app.router.lifespan_context(mcp_app):
                yield
        finally:
            noting.cancel()
            await person.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/wake", wake, methods=["POST"]),
            Mount("/", app=mcp_app),
        ],
        lifespan=lifespan,
    )

    async def noted(scope: Any, receive: Any, send: Any) -> None:
        _accepts_streams.set(
            any(k == b"accept" and b"text/event-stream" in v for k, v in scope.get("headers", ()))
        )
        if scope["type"] != "http" or scope["method"] != "POST":
            # a GET is a client's open stream for what the server may send: listening,
            # not a call (it must not keep the agent awake)
            await app(scope, receive, send)
            return
        person.activity.begin()
        try:
            await app(scope, receive, send)
        finally:
            person.activity.end()
            person.note_work()  # an order placed: the supervisor knows before any crash

    return BearerAuth(
        noted,
        person.user,
        person.keys,
        revoked=person.revoked_tokens,
        on_request=person.activity.touch,
    )


#: Whether the request being served accepts an SSE answer (its Accept header).
_accepts_streams: ContextVar[bool] = ContextVar("accepts_streams", default=False)


class _StreamsWhenAccepted(StreamableHTTPSessionManager):
    """The SDK picks JSON or SSE answers once per server (``json_response``); this picks
    it per request of the 2026 protocol (the SDK's own client, the gateway's), from its
    Accept header: a client that accepts SSE gets a stream when a call has more to say
    than its result — a tool's progress notifications (a backtest's steps) travel on it
    first, where one JSON body would drop them; a call that says nothing more is still
    one JSON body. A client that accepts JSON only (the spec asks for both; some scripts
    send one) keeps JSON. Sessions of the handshake era stay JSON, as before (no progress
    there)."""

    @property
    def json_response(self) -> bool:
        return not _accepts_streams.get()

    @json_response.setter
    def json_response(self, value: bool) -> None:
        pass  # the SDK's one setting is not used

    def _admit_session(self, requestor: Any) -> Any:
        # a handshake-era session is opened for all its requests: JSON for them all
        token = _accepts_streams.set(False)
        try:
            return super()._admit_session(requestor)
        finally:
            _accepts_streams.reset(token)


def _streams_when_accepted(manager: StreamableHTTPSessionManager) -> None:
    manager.__class__ = _StreamsWhenAccepted


async def _note_work(person: PersonAgent, every_s: float = 1.0) -> None:
    """Keep the supervisor's view of this agent's work current (fills end orders too)."""
    while True:
        person.note_work()
        await asyncio.sleep(every_s)


async def start_http(person: PersonAgent, host: str, port: int) -> HttpServer:
    """Start serving; returns once the port accepts connections."""
    config = uvicorn.Config(
        http_app(person), host=host, port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (e.g. the port is taken)
            raise RuntimeError(f"the agent's HTTP server did not start on {host}:{port}")
        await asyncio.sleep(0.005)
    return HttpServer(server, task)


@dataclass
class HttpServer:
    """A running HTTP server of the agent."""

    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        # stop listening at once (uvicorn itself would only on its next tick): a caller
        # racing the exit sees "connection refused", which means nothing was sent and is
        # always safe to retry; requests already read are still served before the exit
        for listening in self.server.servers:
            listening.close()
        self.server.should_exit = True
        await self.task


async def serve_http(
    person: PersonAgent, host: str, port: int, on_ready: Callable[[], None] | None = None
) -> int:
    """Serve until SIGINT/SIGTERM (exit code 0) or until idle (42); ``on_ready`` once listening."""
    running = await start_http(person, host, port)
    # the idle clock starts when the agent can be called: a start slower than a short
    # idle timeout must not make it exit before its first call
    person.activity.touch()
    if on_ready is not None:
        on_ready()
    cfg = person.cfg.agent
    return await run_until_idle(
        running.task,
        running.stop,
        person.activity,
        cfg.idle_timeout_s.get(cfg.tier),
        person.active_triggers,
        person.flush,
    )


async def serve_stdio(person: PersonAgent) -> None:
    """MCP over stdin/stdout (for MCP clients that start the agent themselves)."""
    await person.start()
    try:
        await build_server(person).run_stdio_async()
    finally:
        await person.close()
