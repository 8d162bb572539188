"""Endpoints only the platform's own parts may call (a platform token is required)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dexorder.schemas import UserEvent
from gateway.accounts.store import AccountError
from gateway.api.common import bearer, body, error, gateway_of, refused, text_field
from gateway.platform_calls import is_platform_token
from gateway.provisioning import ProvisioningError
from gateway.service import Refused


async def notify(request: Request) -> Response:
    """Deliver a notification to its person's channels, once per event id.

    200 when delivered (or delivered before), 503 when no channel of theirs is reachable
    now (the caller retries), 4xx for bad calls.
    """
    gw = gateway_of(request)
    try:
        if not is_platform_token(gw.keys, bearer(request)):
            raise Refused(403, "only the platform may send notifications")
        data = await body(request)
        try:
            event = msgspec.convert({**data, "critical": True}, UserEvent)
        except msgspec.ValidationError as exc:
            raise Refused(400, f"not a notification: {exc}") from None
    except Refused as exc:
        return refused(exc)
    if not await gw.events.receive(event):
        return error(503, f"{event.user} has no reachable channel right now")
    return JSONResponse({"delivered": event.event_id})


async def agent(request: Request) -> Response:
    """The MCP address of a person's agent, started if need be (for the tool proxy)."""
    gw = gateway_of(request)
    try:
        if not is_platform_token(gw.keys, bearer(request)):
            raise Refused(403, "only the platform may ask for an agent")
        user = text_field(await body(request), "user", 63)
        account = gw.accounts.get(user)
        endpoint = await gw.provisioner.ensure(account.id, account.tier)
    except (Refused, AccountError) as exc:
        return refused(exc)
    except ProvisioningError as exc:
        return error(503, str(exc))
    return JSONResponse({"user": account.id, "mcp_url": endpoint.mcp_url})


routes = [
    Route("/internal/notify", notify, methods=["POST"]),
    Route("/internal/agent", agent, methods=["POST"]),
]
