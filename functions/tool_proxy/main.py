"""Tool proxy: call one tool of a person's agent, as a CloudEvent in and a CloudEvent out.

An HTTP function taking a binary-mode CloudEvent of type ``dexorder.tool.call`` whose data
is a :class:`~dexorder.contracts.events.ToolCall` (``{"token", "tool", "arguments"}``).
The token is the person's own (a personal access token or a platform-made agent token):
it names whose agent is called and the agent checks it again, so the proxy gives nobody
more than their token already allows. The reply is a ``dexorder.tool.result`` CloudEvent,
a :class:`~dexorder.contracts.events.ToolResult` (``{"tool", "is_error", "result"}``).
"""

from __future__ import annotations

import uuid

import aiohttp
import functions_framework.aio as ff
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dexorder.config import Settings
from dexorder.contracts.events import (
    TOOL_CALL_TYPE,
    TOOL_RESULT_TYPE,
    BadEvent,
    ToolResult,
    decode_tool_call,
    encode_event,
)
from dexorder.tokens import InvalidToken, token_keys, verify_token
from gateway.function_settings import FunctionSettings
from gateway.harness.agent_link import AgentLink
from gateway.platform_calls import calling_token

config = FunctionSettings()


def _bad(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _agent_url(cfg: Settings, user: str) -> str:
    """The person's running agent, from the gateway (which starts it if need be)."""
    headers = {"Authorization": f"Bearer {calling_token(cfg)}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=150)) as http,
        http.post(f"{cfg.gateway.url}/internal/agent", json={"user": user}, headers=headers) as r,
    ):
        body = await r.json(content_type=None)
        if r.status != 200:
            raise AgentUnavailable(r.status, str(body.get("error", body)))
        return str(body["mcp_url"])


class AgentUnavailable(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@ff.http
async def proxy_tool(request: Request) -> Response:
    try:
        event = from_http(dict(request.headers), await request.body())
    except Exception as exc:
        return _bad(400, f"not a CloudEvent: {exc}")
    if event["type"] != TOOL_CALL_TYPE:
        return _bad(400, f"expected a {TOOL_CALL_TYPE} event, got {event['type']}")
    try:
        call = decode_tool_call(event.get_data())
    except BadEvent as exc:
        return _bad(exc.status, str(exc))
    cfg = config.get()
    try:
        user = verify_token(token_keys(cfg), call.token).user
    except InvalidToken as exc:
        return _bad(401, str(exc))
    try:
        url = await _agent_url(cfg, user)
    except AgentUnavailable as exc:
        return _bad(503 if exc.status >= 500 else exc.status, f"the agent is unavailable: {exc}")
    async with AgentLink.open(url, call.token) as link:
        outcome = await link.call(call.tool, call.arguments or {})
    reply = CloudEvent(
        {
            "type": TOOL_RESULT_TYPE,
            "source": "/dexorder/functions/tool-proxy",
            "id": uuid.uuid4().hex,
            "subject": event.get("subject") or call.tool,
            "dexordercallid": event["id"],
        },
        encode_event(
            ToolResult(tool=call.tool, is_error=outcome.is_error, result=outcome.as_json())
        ),
    )
    reply["datacontenttype"] = "application/json"
    headers, body = to_binary(reply)
    return Response(body, headers=headers)
