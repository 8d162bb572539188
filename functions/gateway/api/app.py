"""The gateway's ASGI app: the web page, auth, chat, the Telegram webhook, health."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from gateway.api import auth, chat, internal, oauth, rules, telegram, workspace
from gateway.functions_host import FUNCTIONS, PlatformOnly, function_app
from gateway.mcp_door import McpDoor
from gateway.service import Gateway

PAGE = Path(__file__).resolve().parent.parent / "page" / "index.html"


async def healthz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    e = gw.events.stats
    return JSONResponse(
        {
            "part": "gateway",
            "healthy": True,
            "events_delivered": e["delivered"],
            "events_pending": e["undelivered"],
            "events_refused": e["forged"] + e["malformed"],
            # notifications taken for people with no reachable channel, and the oldest
            # dropped over the per-person cap
            "notifications_held": gw.held.stats["held"],
            "notifications_dropped": gw.held.stats["dropped"],
        }
    )


async def page(request: Request) -> Response:
    return FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


def build_app(gateway: Gateway, manage: bool = True) -> Starlette:
    """The app over ``gateway``; ``manage`` starts and closes it with the app."""
    # outside MCP clients' one door; its GET streams linger as the harness's sessions do
    door = McpDoor(gateway, stream_linger_s=gateway.harness.links.linger_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage:
            await gateway.start()
        try:
            yield
        finally:
            await door.close()
            if manage:
                await gateway.close()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/mcp", door, methods=["GET", "POST", "DELETE"]),
            *auth.routes,
            *chat.routes,
            *telegram.routes,
            *internal.routes,
            *rules.routes,
            *workspace.routes,
            *oauth.routes_for(gateway),
            *(
                Mount(
                    f"/functions/{name}",
                    app=PlatformOnly(function_app(name, gateway.cfg), gateway.keys),
                )
                for name in FUNCTIONS
            ),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.mcp_door = door
    return app
