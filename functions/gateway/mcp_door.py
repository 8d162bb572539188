"""The one door for outside MCP clients: ``/mcp`` on the gateway, proxied to the caller's agent.

An MCP client (Claude Desktop, an IDE, the SDK's ``Client``) speaks streamable HTTP to
``<gateway>/mcp`` with a bearer token: a personal access token, an OAuth access token or
a login session (:meth:`Gateway.authenticate`). The door

* refuses a missing, invalid, expired or revoked token (401 with ``WWW-Authenticate:
  Bearer resource_metadata=...``, where an OAuth client finds how to get one);
* sends every request to the agent of the person the token names, never anyone else's:
  the target is the authenticated person's, whatever the request says;
* starts that agent if it sleeps (``provisioner.ensure``, under the provisioner's
  per-person lock the chat uses too) for a POST, the only request that calls it; a
  GET (a stream for what the server may send) and a DELETE never wake an agent;
* replaces the client's Authorization by a token the agent accepts: minted per request,
  living two minutes, of kind ``pat`` (a call from outside, never the platform's
  ``service`` kind, which the agent trusts more) and carrying the ``jti`` of the
  caller's token, so the agent's own list of revoked tokens (``state/revoked_tokens``)
  stops it too; the agent never holds the person's long-lived token;
* streams both ways without buffering responses (SSE included); passes
  ``Mcp-Session-Id``, ``MCP-Protocol-Version``, ``Last-Event-ID`` and the trace context
  (``traceparent``) on; drops hop-by-hop headers; caps the request body;
* ends the upstream request when the client goes (its disconnect reaches the agent),
  so no request it left behind holds the agent's idle clock or, on Knative, its pod.

Sessions across an agent's sleep. Clients of the current protocol (2026-07-28) have no
session: each POST stands alone, and one after the agent slept simply wakes it. Clients
of the handshake-era protocol hold an ``Mcp-Session-Id`` the agent made, which a fresh
agent does not know (404). The door then opens a session on the fresh agent with the
client's own ``initialize`` (kept when it went through this door, else one with the
client's protocol version), and sends the request again on it: the 404 means the agent
ran nothing, so sending it again is safe. The client keeps its session id; the door
translates it. What the door keeps of a session (``mcp_sessions.py``) is in Redis with
``gateway.redis_url`` (any replica replays the client's own ``initialize``), else in
process and bounded. Resuming is single-flight per person and client session: "read the
record, open a session if it still names the unknown one, write the record" runs under
the gateway's lease ``mcp_resume:<person>:<session>`` (Redis across replicas, else an
asyncio lock), so requests refused together, on one replica or several, open one agent
session and the later ones use it; the lease covers the resume only, never a tool call.

Traces. Each request through the door is a span (``mcp.door <method>``: the JSON-RPC
method, the tool of a ``tools/call``, the person, the status answered, whether the agent
had to be woken, whether its session was resumed), child of the caller's trace context
(the ``_meta`` of its message, where the MCP SDK puts it, else its ``traceparent``
header) and parent of the agent's spans: the door puts its own context in both before
passing the message on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import msgspec
import structlog
from mcp_types import LATEST_PROTOCOL_VERSION
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from dexorder import telemetry
from dexorder.tokens import mint_token
from gateway.leases import LeaseLost, check_held
from gateway.mcp_sessions import DoorSession, SessionMemory, session_memory_for
from gateway.provisioning import ProvisioningError
from gateway.service import Caller, Gateway, Refused

log = structlog.get_logger(part="gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest request body the door takes (a JSON-RPC message: a tool call's arguments,
#: a strategy's source among them).
MAX_BODY = 1024 * 1024
#: How long the token the door hands the agent for one request lives (checked as the
#: request starts; a long tool call is not cut by it).
AGENT_TOKEN_TTL_S = 120
#: Where a refused client learns how to get a token (the OAuth protected-resource metadata).
METADATA_PATH = "/.well-known/oauth-protected-resource"

SESSION = b"mcp-session-id"
VERSION = b"mcp-protocol-version"
#: Hop-by-hop headers (RFC 9110 7.6.1), never forwarded, either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Not passed to the agent: the client's credentials (replaced), the gateway's own address,
#: and the length (the body is sent as read).
_NOT_TO_AGENT = HOP_BY_HOP | {b"host", b"authorization", b"cookie", b"content-length"}
#: Not passed back: what the gateway's own server writes (date, server) and the agent's
#: own challenge (the door answers a refused token itself).
_NOT_TO_CLIENT = HOP_BY_HOP | {b"date", b"server", b"www-authenticate", b"set-cookie"}

Headers = list[tuple[bytes, bytes]]


# --- pure parts ------------------------------------------------------------------------


def _named_by_connection(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers the ``Connection`` header marks hop-by-hop for this connection."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named |= {v.strip().lower() for v in value.split(b",") if v.strip()}
    return named


def to_agent(headers: Iterable[tuple[bytes, bytes]], token: str, session: str | None) -> Headers:
    """The client's headers as the agent gets them: end-to-end ones only, the agent's token
    for Authorization, and the agent's session id for the client's (when translated)."""
    given = list(headers)
    drop = _NOT_TO_AGENT | _named_by_connection(given)
    out = [(n.lower(), v) for n, v in given if n.lower() not in drop and n.lower() != SESSION]
    if session is not None:
        out.append((SESSION, session.encode("latin-1")))
    out.append((b"authorization", f"Bearer {token}".encode()))
    return out


def to_client(headers: Iterable[tuple[bytes, bytes]], session: str | None) -> Headers:
    """The agent's response headers as the client gets them (its own session id restored)."""
    given = list(headers)
    drop = _NOT_TO_CLIENT | _named_by_connection(given)
    out = []
    for name, value in given:
        low = name.lower()
        if low in drop:
            continue
        if low == SESSION and session is not None:
            value = session.encode("latin-1")
        out.append((low, value))
    return out


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v.decode("latin-1")
    return None


class _ProbeParams(msgspec.Struct):
    """Of a message's params, what the door reads (a tool's arguments are not decoded)."""

    #: a ``tools/call``'s tool (used only when a string)
    name: object = None
    #: where the MCP SDK carries the trace context (used only when an object)
    meta: object = msgspec.field(default=None, name="_meta")


class _Probe(msgspec.Struct):
    """As much of a JSON-RPC message as the door looks at."""

    method: str | None = None
    params: _ProbeParams | None = None


def _probe(body: bytes) -> _Probe:
    try:
        return msgspec.json.decode(body, type=_Probe)
    except msgspec.MsgspecError:  # a batch, or not JSON: the agent answers it
        return _Probe()


def is_initialize(body: bytes) -> bool:
    """Whether ``body`` is the handshake-era ``initialize`` request."""
    return _probe(body).method == "initialize"


#: The trace context's carriers (W3C trace context and baggage).
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


def caller_context(probe: _Probe, headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    """The caller's trace context: its message's ``_meta`` (where the MCP SDK puts it),
    else its ``traceparent`` header; None when it gives none (the door's span is a root)."""
    meta = probe.params.meta if probe.params else None
    carriers: list[dict[str, str]] = []
    if isinstance(meta, dict):
        carriers.append({k: v for k, v in meta.items() if isinstance(v, str)})
    carriers.append(
        {n.decode("latin-1"): v.decode("latin-1") for n, v in headers if n in _TRACE_HEADERS}
    )
    for carrier in carriers:
        if "traceparent" not in carrier:
            continue
        ctx = propagate.extract(carrier)
        if trace.get_current_span(ctx).get_span_context().is_valid:
            return ctx
    return None


def with_trace(body: bytes, headers: Headers, carrier: dict[str, str]) -> tuple[bytes, Headers]:
    """The message and headers carrying ``carrier`` (the door span's context) instead of
    the caller's: in the message's ``_meta`` (where the agent's MCP server reads it) and
    in the headers. A body that is not one JSON-RPC message goes as it came."""
    if not carrier:  # traces off: nothing of the door's to carry
        return body, headers
    headers = [(n, v) for n, v in headers if n.lower() not in _TRACE_HEADERS] + [
        (k.encode(), v.encode()) for k, v in carrier.items()
    ]
    if not body:
        return body, headers
    try:
        message = msgspec.json.decode(body)
    except msgspec.MsgspecError:
        return body, headers
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return body, headers  # a batch, or a response to the agent's own request
    params = message.get("params")
    if params is None:
        params = message["params"] = {}
    if not isinstance(params, dict):
        return body, headers
    meta = params.get("_meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    for key in ("traceparent", "tracestate", "baggage"):
        meta.pop(key, None)
    params["_meta"] = meta | carrier
    return msgspec.json.encode(message), headers


@dataclass
class _Traced:
    """The door's span of one request: started once its parent is known (the message read),
    or when the request is refused before; ended with the answer."""

    attributes: dict[str, str | bool | int] = field(default_factory=dict)
    span: trace.Span | None = None
    status: int | None = None

    def start(self, parent: Context | None) -> None:
        if self.span is None:
            rpc = self.attributes.get("mcp.method.name")
            name = (
                f"mcp.door {rpc}" if rpc else f"mcp.door {self.attributes['http.request.method']}"
            )
            self.span = trace.get_tracer("dexorder").start_span(
                name, context=parent, kind=trace.SpanKind.SERVER, attributes=self.attributes
            )

    def set(self, key: str, value: str | bool | int) -> None:
        self.attributes[key] = value
        if self.span is not None:
            self.span.set_attribute(key, value)

    def carrier(self) -> dict[str, str]:
        """The span's context for the agent (empty when traces are off)."""
        carrier: dict[str, str] = {}
        if self.span is not None:
            propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier

    def end(self, parent: Context | None, error: BaseException | None) -> None:
        self.start(parent)
        assert self.span is not None
        if self.status is not None:
            self.span.set_attribute("http.response.status_code", self.status)
            if self.status >= 500:
                telemetry.failed(self.span, str(self.status), f"answered {self.status}")
        if error is not None:
            self.span.record_exception(error)
            telemetry.failed(self.span, type(error).__qualname__, str(error))
        self.span.end()


def fresh_initialize(protocol_version: str | None) -> bytes:
    """An ``initialize`` for a session the door did not see begin (no client capabilities:
    the agent asks its clients for nothing)."""
    return msgspec.json.encode(
        {
            "jsonrpc": "2.0",
            "id": "dexorder-door-resume",
            "method": "initialize",
            "params": {
                "protocolVersion": protocol_version or LATEST_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "dexorder-mcp-door", "version": "1"},
            },
        }
    )


class _InitResult(msgspec.Struct, rename="camel"):
    protocol_version: str


class _InitReply(msgspec.Struct):
    result: _InitResult


def negotiated_version(body: bytes, content_type: str) -> str | None:
    """The protocol version an ``initialize`` reply agreed (JSON, or one SSE event)."""
    if "text/event-stream" in content_type:
        data = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
        body = data[-1] if data else b""
    try:
        return msgspec.json.decode(body, type=_InitReply).result.protocol_version
    except msgspec.MsgspecError:
        return None


# --- the door --------------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or []


@dataclass
class _Awake:
    """A person's agent as this door last reached it."""

    url: str
    last_call: float


class McpDoor:
    """The ASGI app served at ``/mcp`` (GET, POST, DELETE)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        max_body: int = MAX_BODY,
        stream_linger_s: float | None = None,
        http: httpx2.AsyncClient | None = None,
        memory: SessionMemory | None = None,
    ) -> None:
        self.gw = gateway
        self.max_body = max_body
        #: a GET stream is ended once the person made no call through this door for this
        #: long (Knative: an open request keeps the agent's pod up); None: it lasts as long
        #: as the agent (one machine: the agent's idle clock does not count listening)
        self.stream_linger_s = stream_linger_s
        self._http = http
        self._awake: dict[str, _Awake] = {}
        #: (person, the client's session id) → its ``initialize`` and the agent session
        #: serving it now: in Redis across replicas
        self.memory = memory or session_memory_for(gateway.cfg.gateway)
        self.stats = {"requests": 0, "refused": 0, "resumed": 0, "disconnects": 0}

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(
                # no read timeout: a stream waits as long as its client does, and a tool
                # call (a backtest) as long as the agent lets it run
                timeout=httpx2.Timeout(connect=10.0, read=None, write=30.0, pool=10.0),
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
                follow_redirects=False,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self.memory.close()

    # --- one request ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - routed here for HTTP only
            return
        self.stats["requests"] += 1
        traced = _Traced({"http.request.method": str(scope["method"])})
        error: BaseException | None = None
        try:
            await self._serve(scope, receive, send, traced)
        except _Refusal as exc:
            self.stats["refused"] += 1
            traced.status = exc.status
            await _answer(send, exc.status, exc.message, exc.headers)
        except BaseException as exc:
            error = exc
            raise
        finally:
            traced.end(caller_context(_Probe(), scope["headers"]), error)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, traced: _Traced) -> None:
        method: str = scope["method"]
        if method not in ("GET", "POST", "DELETE"):
            raise _Refusal(405, "the MCP endpoint takes GET, POST and DELETE")
        headers: Headers = list(scope["headers"])
        caller = await self._authenticate(scope, headers)
        traced.set(telemetry.USER, caller.id)
        if method == "POST":  # each a message to the agent; a GET is one long stream
            verdict = await self.gw.limits.mcp_request(caller.id, caller.account.tier)
            if not verdict.allowed:
                raise _Refusal(
                    429, verdict.detail, [(b"retry-after", str(verdict.retry_after_s).encode())]
                )
        body = await self._body(receive, headers)
        probe = _probe(body)
        if probe.method is not None:
            traced.set("mcp.method.name", probe.method)
        tool = probe.params.name if probe.params else None
        if probe.method == "tools/call" and isinstance(tool, str):
            traced.set("gen_ai.tool.name", tool)
        traced.start(caller_context(probe, headers))
        traced.set("dexorder.mcp.woken", False)
        user = caller.id
        client_session = header(headers, SESSION)
        if method == "POST":
            url = await self._wake(caller, traced)
        else:
            awake = self._awake_url(user)
            if awake is None:
                # never woken to listen or to end a session: a sleeping agent has no session
                if method == "DELETE":
                    traced.status = 204
                    await _answer(send, 204, None)
                    return
                raise _Refusal(
                    405, "no stream for server messages while your agent sleeps; POST wakes it"
                )
            url = awake
        agent_session = await self._agent_session(user, client_session)
        carrier = traced.carrier()
        upstream = await self._send(caller, method, url, headers, body, agent_session, carrier)
        if upstream.status_code == 404 and method == "POST" and client_session is not None:
            # the agent does not know the session (it slept since): nothing ran, so the
            # request goes again on a session opened for this client on the fresh agent
            await upstream.aclose()
            agent_session = await self._resume(
                caller, url, headers, client_session, agent_session or client_session, carrier
            )
            traced.set("dexorder.mcp.resumed", True)
            upstream = await self._send(caller, method, url, headers, body, agent_session, carrier)
        if upstream.status_code == 401:  # the agent's own revocation list refused it
            message = (await upstream.aread()).decode("utf-8", "replace")
            await upstream.aclose()
            raise _Refusal(401, _agent_error(message), self._challenge(scope))
        traced.status = upstream.status_code
        session = header(upstream.headers.raw, SESSION)
        if method == "POST" and client_session is None and session and is_initialize(body):
            # what a fresh agent is sent for this client, by whichever replica wakes it
            await self.memory.put(user, session, DoorSession(body.decode(), session))
            log.info("mcp session opened at the door", user=user, via=caller.via)
        if method == "DELETE" and client_session is not None and upstream.is_success:
            await self.memory.forget(user, client_session)
        try:
            await self._relay(
                upstream, receive, send, client_session if agent_session else None, user, method
            )
        finally:
            await upstream.aclose()
            if method == "POST":
                self._touch(user, url)

    async def _authenticate(self, scope: Scope, headers: Headers) -> Caller:
        scheme, _, token = (header(headers, b"authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refusal(401, "missing bearer token", self._challenge(scope))
        try:
            return await asyncio.to_thread(self.gw.authenticate, token.strip())
        except Refused as exc:
            extra = self._challenge(scope) if exc.status == 401 else []
            raise _Refusal(exc.status, exc.message, extra) from None

    def _challenge(self, scope: Scope) -> Headers:
        """``WWW-Authenticate`` naming where this resource's OAuth metadata is (RFC 9728):
        at ``gateway.public_url`` (the OAuth issuer's address) when set, else where the
        client reached the gateway."""
        g = self.gw.cfg.gateway
        if g.public_url:
            base = g.public_base
        else:
            host = header(scope["headers"], b"host") or g.url.split("://", 1)[1]
            base = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
        url = f"{base}{METADATA_PATH}"
        return [(b"www-authenticate", f'Bearer resource_metadata="{url}"'.encode())]

    async def _body(self, receive: Receive, headers: Headers) -> bytes:
        size = header(headers, b"content-length")
        if size is not None and size.isdigit() and int(size) > self.max_body:
            raise _Refusal(413, f"request body too large (at most {self.max_body // 1024} KB)")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refusal(400, "the client went away")  # nobody reads the answer
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise _Refusal(413, f"request body too large (at most {self.max_body // 1024} KB)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # --- the person's agent ----------------------------------------------------------------

    async def _wake(self, caller: Caller, traced: _Traced) -> str:
        async def starting() -> None:  # the agent slept: this request wakes it
            traced.set("dexorder.mcp.woken", True)

        try:
            endpoint = await self.gw.provisioner.ensure(
                caller.id, caller.account.tier, on_starting=starting
            )
        except ProvisioningError as exc:
            raise _Refusal(exc.status, str(exc)) from None
        self._touch(caller.id, endpoint.mcp_url)
        return endpoint.mcp_url

    def _touch(self, user: str, url: str) -> None:
        self._awake[user] = _Awake(url, time.monotonic())

    def _awake_url(self, user: str) -> str | None:
        """The address of ``user``'s agent if it is awake (as far as this door knows)."""
        seen = self._awake.get(user)
        if seen is None or self.gw.provisioner.state(user) != "running":
            return None
        if self.stream_linger_s is not None and self._idle_for(seen) >= self.stream_linger_s:
            return None
        return seen.url

    @staticmethod
    def _idle_for(seen: _Awake) -> float:
        return time.monotonic() - seen.last_call

    async def _agent_session(self, user: str, client_session: str | None) -> str | None:
        if client_session is None:
            return None
        kept = await self.memory.get(user, client_session)
        return kept.agent_session if kept is not None else None

    def _agent_token(self, caller: Caller) -> str:
        # kind "pat": a call from outside; the jti of the caller's token, so that the
        # agent's revocation list refuses it as the door does
        return mint_token(
            self.gw.keys, caller.id, "pat", AGENT_TOKEN_TTL_S, token_id=caller.token_id
        )

    async def _send(
        self,
        caller: Caller,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        agent_session: str | None,
        carrier: dict[str, str],
    ) -> httpx2.Response:
        session = agent_session or header(headers, SESSION)
        body, headers = with_trace(body, headers, carrier)
        request = self.http.build_request(
            method,
            url,
            headers=to_agent(headers, self._agent_token(caller), session),
            content=body if method == "POST" else None,
        )
        try:
            return await self.http.send(request, stream=True)
        except httpx2.TimeoutException:
            raise _Refusal(504, "your agent did not answer in time; try again") from None
        except httpx2.TransportError as exc:
            log.warning("agent unreachable through the door", user=caller.id, error=str(exc))
            if method != "POST":
                raise _Refusal(405, "your agent is not awake; POST wakes it") from None
            raise _Refusal(503, "your agent could not be reached; try again") from None

    async def _resume(
        self,
        caller: Caller,
        url: str,
        headers: Headers,
        client_session: str,
        unknown: str,
        carrier: dict[str, str],
    ) -> str:
        """A session on the agent for ``client_session``, whose agent session ``unknown``
        the agent no longer knows (see the module's docstring). Requests of one session
        that failed together (a client sends several at once, to one replica or several)
        open one session: the first to take the lease opens it, the others find it in the
        record read again under the lease. Held for the resume only; the request itself
        goes again after the lease is let go."""
        try:
            async with self.gw.leases.hold(f"mcp_resume:{caller.id}:{client_session}"):
                current = await self._agent_session(caller.id, client_session) or client_session
                if current != unknown:  # opened meanwhile for a request beside this one
                    return current
                return await self._open_session(caller, url, headers, client_session, carrier)
        except LeaseLost:  # stalled past the lease: another request may be resuming it
            raise _Refusal(503, "your MCP session could not be resumed; try again") from None

    async def _open_session(
        self,
        caller: Caller,
        url: str,
        headers: Headers,
        client_session: str,
        carrier: dict[str, str],
    ) -> str:
        user = caller.id
        kept = await self.memory.get(user, client_session)
        # the client's own initialize, whichever replica it went through
        init = kept.initialize.encode() if kept else fresh_initialize(header(headers, VERSION))
        base = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        opened = await self._send(caller, "POST", url, base, init, None, carrier)
        try:
            reply = await opened.aread()
        finally:
            await opened.aclose()
        session = header(opened.headers.raw, SESSION)
        if opened.status_code != 200 or session is None:
            raise _Refusal(
                502, f"your agent did not open a session for this client ({opened.status_code})"
            )
        version = negotiated_version(reply, opened.headers.get("content-type", ""))
        done = msgspec.json.encode({"jsonrpc": "2.0", "method": "notifications/initialized"})
        extra = [(VERSION, version.encode())] if version else []
        initialized = await self._send(caller, "POST", url, base + extra, done, session, carrier)
        await initialized.aclose()
        check_held()  # not written by a replica that stalled past its lease
        await self.memory.put(user, client_session, DoorSession(init.decode(), session))
        self.stats["resumed"] += 1
        log.info("mcp session resumed on a fresh agent", user=user)
        return session

    # --- the answer ----------------------------------------------------------------------

    async def _relay(
        self,
        upstream: httpx2.Response,
        receive: Receive,
        send: Send,
        client_session: str | None,
        user: str,
        method: str,
    ) -> None:
        """Stream ``upstream`` to the client as it comes; stop (and so close the upstream
        request) when the client leaves, or, for a GET stream with a linger, when the
        person has stopped calling."""
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status_code,
                "headers": to_client(upstream.headers.raw, client_session),
            }
        )
        left = False
        async with anyio.create_task_group() as tg:

            async def client_left() -> None:
                nonlocal left
                while (await receive())["type"] != "http.disconnect":
                    pass
                left = True
                self.stats["disconnects"] += 1
                tg.cancel_scope.cancel()

            tg.start_soon(client_left)
            if method == "GET" and self.stream_linger_s is not None:
                tg.start_soon(self._end_when_quiet, user, tg.cancel_scope)
            with contextlib.suppress(httpx2.HTTPError):  # the agent went: the stream ends
                async for chunk in upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tg.cancel_scope.cancel()
        if not left:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _end_when_quiet(self, user: str, scope: anyio.CancelScope) -> None:
        assert self.stream_linger_s is not None
        while True:
            seen = self._awake.get(user)
            quiet = self.stream_linger_s if seen is None else self._idle_for(seen)
            if quiet >= self.stream_linger_s:
                scope.cancel()
                return
            await anyio.sleep(self.stream_linger_s - quiet)


def _agent_error(body: str) -> str:
    try:
        reason = msgspec.json.decode(body.encode(), type=dict[str, str]).get("error")
    except msgspec.MsgspecError:
        reason = None
    return reason or "token refused by your agent"


async def _answer(
    send: Send, status: int, message: str | None, headers: Headers | None = None
) -> None:
    body = msgspec.json.encode({"error": message}) if message is not None else b""
    out = [*(headers or [])]
    if body:
        out += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})
