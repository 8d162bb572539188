"""Tool proxy: call one tool of a person's agent, as a CloudEvent in and a CloudEvent out.

An HTTP function taking a binary-mode CloudEvent of type ``dexorder.tool.call`` whose data
is ``{"token", "tool", "arguments"}``. The token is the person's own (a personal access
token or a platform-made agent token): it names whose agent is called and the agent
checks it again, so the proxy gives nobody more than their token already allows. The
reply is a ``dexorder.tool.result`` CloudEvent (``{"tool", "is_error", "result"}``).
"""

from __future__ import annotations

import json
import uuid

import aiohttp
import functions_framework.aio as ff
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dexorder.config import Settings
from dexorder.tokens import InvalidToken, token_keys, verify_token
from gateway.function_settings import FunctionSettings
from gateway.harness.agent_link import AgentLink
from gateway.platform_calls import platform_token

CALL_TYPE = "dexorder.tool.call"
RESULT_TYPE = "dexorder.tool.result"


config = FunctionSettings()


def _bad(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _agent_url(cfg: Settings, user: str) -> str:
    """The person's running agent, from the gateway (which starts it if need be)."""
    headers = {"Authorization": f"Bearer {platform_token(token_keys(cfg))}"}
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
    if event["type"] != CALL_TYPE:
        return _bad(400, f"expected a {CALL_TYPE} event, got {event['type']}")
    raw = event.get_data()
    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    except ValueError:
        return _bad(400, "the event data is not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return _bad(400, 'the data needs "tool", "arguments" and "token"')
    arguments = data.get("arguments") or {}
    if not isinstance(arguments, dict):
        return _bad(400, '"arguments" must be an object')
    cfg = config.get()
    try:
        user = verify_token(token_keys(cfg), str(data.get("token", ""))).user
    except InvalidToken as exc:
        return _bad(401, str(exc))
    try:
        url = await _agent_url(cfg, user)
    except AgentUnavailable as exc:
        return _bad(503 if exc.status >= 500 else exc.status, f"the agent is unavailable: {exc}")
    async with AgentLink.open(url, str(data["token"])) as link:
        outcome = await link.call(data["tool"], arguments)
    reply = CloudEvent(
        {
            "type": RESULT_TYPE,
            "source": "/dexorder/functions/tool-proxy",
            "id": uuid.uuid4().hex,
            "subject": event.get("subject") or data["tool"],
            "dexordercallid": event["id"],
        },
        json.dumps({"tool": data["tool"], "is_error": outcome.is_error, "result": outcome.value}),
    )
    reply["datacontenttype"] = "application/json"
    headers, body = to_binary(reply)
    return Response(body, headers=headers)
