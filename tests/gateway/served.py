"""The gateway served on free ports with real agent subprocesses, and clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web
from starlette.types import ASGIApp

from dexorder.config import Settings
from dexorder.contracts.chat import decode_server_frame, encode
from dexorder.process import free_port
from dexorder.schemas import UserEvent
from dexorder.tokens import mint_token
from gateway.api.app import build_app
from gateway.provisioning import LocalProvisioner
from gateway.service import Gateway


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """A loopback aiohttp server for ``app`` (a stand-in for an outside service); yields its URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def alert_event(gw: Gateway, user: str, event_id: str, **payload: Any) -> UserEvent:
    """A triggered-alert event for ``user``, signed as their agent signs it."""
    return UserEvent(
        event_id=event_id,
        user=user,
        kind="alert",
        critical=True,
        payload=payload,
        auth=mint_token(gw.keys, user),
    )


async def run_cli(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """``dexorder *args`` in a subprocess: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "launcher",
        *args,
        env={**os.environ, **env},
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def gateway_settings(home: Any, **gateway: Any) -> Settings:
    return Settings(
        home=home,
        embedder={"enabled": False},
        gateway={"port": free_port(), "events_port": free_port(), **gateway},
    )


class Served:
    """A running gateway: its URL, the object itself, and HTTP helpers."""

    def __init__(self, gw: Gateway, url: str, http: aiohttp.ClientSession) -> None:
        self.gw, self.url, self.http = gw, url, http

    async def post(
        self, path: str, body: Any = None, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {
            **kw.pop("headers", {}),
            **({"Authorization": f"Bearer {token}"} if token else {}),
        }
        async with self.http.post(self.url + path, json=body, headers=headers, **kw) as r:
            return r.status, await r.json(content_type=None) if r.content_length != 0 else None

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.url + path, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def delete(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.delete(self.url + path, headers=headers) as r:
            return r.status, await r.json(content_type=None) if r.content_length != 0 else None

    async def sign_up(self, email: str, password: str = "correct horse battery") -> dict[str, Any]:
        status, body = await self.post("/api/auth/signup", {"email": email, "password": password})
        assert status == 201, body
        return dict(body)

    @contextlib.asynccontextmanager
    async def socket(self, token: str) -> AsyncIterator[ChatSocket]:
        async with self.http.ws_connect(self.url.replace("http", "ws") + "/api/chat/ws") as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
            sock = ChatSocket(ws)
            first = await sock.next()
            assert first["type"] == "ready", first
            yield sock


class ChatSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def next(self, timeout: float = 60) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = dict(json.loads(msg.data))
        # every frame the gateway sends is one of the protocol's, and says nothing more
        assert json.loads(encode(decode_server_frame(msg.data))) == data, data
        return data

    async def ask(self, text: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Everything the gateway sends for one message, up to its reply or error."""
        await self.ws.send_str(json.dumps({"type": "message", "text": text}))
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                frames.append(frame)
                if frame["type"] in ("reply", "error"):
                    return frames

    async def until(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame["type"] == kind:
                    return frame


@contextlib.asynccontextmanager
async def serve_asgi(app: ASGIApp, port: int, **config: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn on loopback ``port`` while the block runs; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()  # raises why it could not start
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve_gateway(
    cfg: Settings, agent_env: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    """The gateway on ``cfg.gateway.port`` while the block runs."""
    provisioner = LocalProvisioner(
        cfg,
        env={
            "DEXORDER_EMBEDDER__ENABLED": "false",
            "DEXORDER_AGENT__GATEWAY_EVENTS": f"tcp://127.0.0.1:{cfg.gateway.events_port}",
            **(agent_env or {}),
        },
    )
    gw = Gateway.build(cfg, provisioner)
    async with (
        serve_asgi(build_app(gw), cfg.gateway.port, ws="websockets-sansio") as url,
        aiohttp.ClientSession() as http,
    ):
        yield Served(gw, url, http)
