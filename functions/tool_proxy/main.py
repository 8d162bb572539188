"""Tool proxy: call one tool of a person's agent, as a CloudEvent in and a CloudEvent out.

An HTTP function taking a binary-mode CloudEvent of type ``dexorder.tool.call`` whose data
is a :class:`~dexorder.contracts.events.ToolCall` (``{"token", "tool", "arguments"}``).
The token is the person's own (a personal access token or a platform-made agent token):
it names whose agent is called and the agent checks it again, so the proxy gives nobody
more than their token already allows. The reply is a ``dexorder.tool.result`` CloudEvent,
a :class:`~dexorder.contracts.events.ToolResult` (``{"tool", "is_error", "result"}``).

Delivery is at least once, so each call runs once (:mod:`gateway.call_once`): the first
delivery of an event claims it, runs the tool and stores the reply; a redelivery (by the
event's source and id: the producer's own id, or ``partition:P/offset:O``) answers with
that same reply event and does not run the tool again; one arriving while the first still
runs waits for its reply. A failure before the tool is called (the agent unavailable)
releases the claim, so the retry runs it; once the tool was called, a failure is
answered as a tool error and never run again (it may have placed an order).
"""

from __future__ import annotations

import asyncio
import time
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
    ToolCall,
    ToolResult,
    decode_tool_call,
    encode_event,
)
from dexorder.tokens import InvalidToken, token_keys, verify_token
from gateway.call_once import (
    CallRecord,
    CallStore,
    Decision,
    call_digest,
    call_key,
    decide,
    open_call_store,
)
from gateway.function_settings import FunctionSettings
from gateway.harness.agent_link import AgentLink
from gateway.platform_calls import calling_token

config = FunctionSettings()
#: How long a redelivery waits for the reply of a run under way before answering 503
#: (retried by the trigger); a run lasts at most the function's timeout.
WAIT_FOR_RUN_S = 30.0
_stores: dict[str | None, CallStore] = {}


def _store(cfg: Settings) -> CallStore:
    """The call store of ``cfg`` (one per Redis URL for the life of the process)."""
    url = cfg.gateway.redis_url
    if url not in _stores:
        _stores[url] = open_call_store(url)
    return _stores[url]


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
    store, key = _store(cfg), call_key(user, str(event["source"]), str(event["id"]))
    content = encode_event(ToolCall(tool=call.tool, arguments=call.arguments))  # no token
    digest = call_digest(call.tool, content)
    ttl = cfg.gateway.tool_call_memory_s
    mine = CallRecord(digest=digest, claimed_at=time.time())
    record = await _claim(store, key, mine, call.tool, cfg)
    if isinstance(record, Response):
        return record
    if record is not None:  # delivered before: the stored reply, the tool not run again
        assert record.reply is not None and record.reply_id is not None
        return _reply(event, call, record.reply_id, record.reply)
    try:
        url = await _agent_url(cfg, user)
    except AgentUnavailable as exc:
        await store.release(key)  # nothing ran: the retry may run it
        return _bad(503 if exc.status >= 500 else exc.status, f"the agent is unavailable: {exc}")
    except BaseException:
        await store.release(key)
        raise
    try:
        async with AgentLink.open(url, call.token) as link:
            outcome = await link.call(call.tool, call.arguments or {})
        result = ToolResult(tool=call.tool, is_error=outcome.is_error, result=outcome.as_json())
    except Exception as exc:  # the tool was called: it may have run, so it is not run again
        result = ToolResult(
            tool=call.tool,
            is_error=True,
            result=f"the call was cut off ({type(exc).__name__}): it may or may not have run; "
            "check, then call again with a new event if need be",
        )
    data, reply_id = encode_event(result), uuid.uuid4().hex
    await store.put(
        key, CallRecord(digest=digest, claimed_at=time.time(), reply_id=reply_id, reply=data), ttl
    )
    return _reply(event, call, reply_id, data)


async def _claim(
    store: CallStore, key: str, mine: CallRecord, tool: str, cfg: Settings
) -> CallRecord | Response | None:
    """Claim the call: None (ours to run), the record holding its reply (a redelivery), or
    the answer to give (a conflict, or a run still under way after waiting for it)."""
    ttl, lease = cfg.gateway.tool_call_memory_s, cfg.gateway.tool_call_lease_s
    existing = await store.claim(key, mine, ttl)
    deadline, pause = time.monotonic() + WAIT_FOR_RUN_S, 0.02
    while True:
        decision = decide(existing, mine.digest, time.time(), lease)
        if decision is Decision.RUN:
            return None
        if decision is Decision.REPLAY:
            return existing
        if decision is Decision.CONFLICT:
            return _bad(422, "this event id was used for another call: give each call its own")
        assert existing is not None
        if decision is Decision.INTERRUPTED:  # its run died midway: never run it twice
            result = ToolResult(
                tool=tool,
                is_error=True,
                result="an earlier delivery of this call was cut off: it may or may not have "
                "run; check, then call again with a new event if need be",
            )
            done = CallRecord(
                digest=mine.digest,
                claimed_at=existing.claimed_at,
                reply_id=uuid.uuid4().hex,
                reply=encode_event(result),
            )
            await store.put(key, done, ttl)
            return done
        if time.monotonic() >= deadline:  # RUNNING: the trigger retries later
            return _bad(503, "this call is running: its reply comes with a later delivery")
        await asyncio.sleep(pause)  # the run under way writes its reply to the store
        pause = min(pause * 2, 0.5)
        existing = await store.get(key)
        if existing is None:  # released (its agent was unavailable): claim it ourselves
            existing = await store.claim(key, mine, ttl)


def _reply(event: CloudEvent, call: ToolCall, reply_id: str, data: bytes) -> Response:
    """The reply CloudEvent: the same id and data for every delivery of one call."""
    reply = CloudEvent(
        {
            "type": TOOL_RESULT_TYPE,
            "source": "/dexorder/functions/tool-proxy",
            "id": reply_id,
            "subject": event.get("subject") or call.tool,
            "dexordercallid": event["id"],
        },
        data,
    )
    reply["datacontenttype"] = "application/json"
    headers, body = to_binary(reply)
    return Response(body, headers=headers)
