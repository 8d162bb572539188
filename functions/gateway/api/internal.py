"""Endpoints only the platform's own parts may call (a platform token is required)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dexorder.contracts.accounts import AgentAddress, AgentRequest, Delivered, Held
from dexorder.contracts.events import BadEvent, decode_notification
from dexorder.tokens import mint_token
from gateway.api.common import (
    answer,
    answers_refusals,
    bearer,
    body,
    bounded,
    gateway_of,
    typed_body,
)
from gateway.held import notification_event
from gateway.platform_calls import is_platform_token
from gateway.provisioning import ProvisioningError
from gateway.service import Refused


def _platform_only(request: Request, what: str) -> None:
    if not is_platform_token(gateway_of(request).keys, bearer(request)):
        raise Refused(403, f"only the platform may {what}")


@answers_refusals
async def notify(request: Request) -> Response:
    """Deliver a notification to its person's channels, once per event id.

    200 when delivered (or delivered before); 202 when no channel of theirs is reachable
    now: it is held (durably, once per event id) and delivered when they next open a chat,
    so the caller is done either way (``gateway/held.py``); 404 for someone with no
    account, other 4xx for bad calls.
    """
    _platform_only(request, "send notifications")
    try:
        note = decode_notification(await body(request))
    except BadEvent as exc:
        raise Refused(exc.status, str(exc)) from None
    bounded(note.event_id, "event_id", 64)  # the width the delivered and held ids are kept in
    bounded(note.user, "user", 63)
    gw = gateway_of(request)
    if await gw.events.receive(notification_event(note)):
        return answer(Delivered(delivered=note.event_id))
    await gw.hold_notification(note)
    return answer(Held(held=note.event_id), status=202)


@answers_refusals
async def agent(request: Request) -> Response:
    """The MCP address of a person's agent, started if need be (for the tool proxy), and
    when asked a short-lived token for it (for the rule delivery)."""
    _platform_only(request, "ask for an agent")
    gw = gateway_of(request)
    asked = await typed_body(request, AgentRequest)
    account = gw.accounts.get(bounded(asked.user, "user", 63))
    try:
        endpoint = await gw.provisioner.ensure(account.id, account.tier)
    except ProvisioningError as exc:
        raise Refused(exc.status, str(exc)) from None
    token = mint_token(gw.keys, account.id, "service", ttl_s=300) if asked.token else None
    return answer(AgentAddress(user=account.id, mcp_url=endpoint.mcp_url, token=token))


routes = [
    Route("/internal/notify", notify, methods=["POST"]),
    Route("/internal/agent", agent, methods=["POST"]),
]
