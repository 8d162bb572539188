"""Chat over HTTP (one request, one reply) and over a WebSocket (streamed tokens, live
tool progress, and the person's alerts and fills arriving as they happen).

The frames and the HTTP answer are the types of :mod:`dexorder.contracts.chat` (its
docstring has the table; ``python -m dexorder.contracts.chat`` prints the JSON Schema).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dexorder import telemetry
from dexorder.contracts.chat import (
    Account,
    AuthFrame,
    ChatAnswer,
    ChatRequest,
    ClientFrame,
    ErrorFrame,
    InvalidFrame,
    MessageFrame,
    Progress,
    ReadyFrame,
    ReplyFrame,
    ServerFrame,
    SubscribedFrame,
    SubscribeFrame,
    UnsubscribeFrame,
    client_frame,
    encode,
)
from gateway.accounts.store import AccountError
from gateway.api.common import (
    MAX_BODY,
    answers_refusals,
    bearer,
    bounded,
    caller,
    gateway_of,
    json_object,
    typed_body,
)
from gateway.api.workspace import feed_of
from gateway.live import BadTopic, FeedUnavailable, Subscriptions, TooMany, UnknownMarket
from gateway.service import Caller, Refused

log = structlog.get_logger(part="gateway")

#: How long a WebSocket may take to send its auth message.
AUTH_TIMEOUT_S = 10.0
#: The most frames a client may have waiting (messages sent while a turn runs).
MAX_QUEUED = 8
#: The largest frame read (characters), as for an HTTP body.
MAX_FRAME_CHARS = MAX_BODY


@contextlib.contextmanager
def _message(channel: str, authenticate: Callable[[], Caller]) -> Iterator[Caller]:
    """The root span of one chat message's trace (down to the agent's tools and sandbox):
    the caller authenticated in it, and every span under it theirs."""
    root = telemetry.span("chat.message", {"chat.channel": channel}, telemetry.SpanKind.SERVER)
    with root as span:
        with telemetry.span("authenticate") as auth:
            who = authenticate()
            auth.set_attribute(telemetry.USER, who.id)
        span.set_attribute(telemetry.USER, who.id)
        with telemetry.as_user(who.id):
            yield who


@answers_refusals
async def chat_http(request: Request) -> Response:
    with _message("http", lambda: caller(request)) as who:
        gw = gateway_of(request)
        asked = await typed_body(request, ChatRequest)
        text = bounded(asked.message, "message", gw.cfg.gateway.max_message_chars)
        progress: list[Progress] = []

        async def collect(frame: ServerFrame) -> None:
            if isinstance(frame, Progress):
                progress.append(frame)

        result = await gw.chat(who, text, "http", collect)
    answer = ChatAnswer(
        reply=result.reply,
        model=result.model,
        tokens=result.tokens,
        attachments=result.attachments,
        progress=progress,
    )
    return Response(encode(answer), media_type="application/json")


class _Socket:
    """One chat WebSocket: sends serialised (turns and events write concurrently)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()

    async def send(self, frame: ServerFrame) -> None:
        async with self._lock:
            await self.ws.send_text(encode(frame))


async def _frame(ws: WebSocket) -> ClientFrame | None:
    """The next client frame, None for a JSON object that is none of them; :class:`Refused`
    (400) for a binary frame or one that is not an acceptable JSON object (the same rules
    as HTTP bodies), and :class:`WebSocketDisconnect` when the client has gone."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    if text is None:
        raise Refused(400, "frames must be JSON text, not binary")
    if len(text) > MAX_FRAME_CHARS:
        raise Refused(413, f"frame too large (at most {MAX_FRAME_CHARS // 1024} KB)")
    try:
        return client_frame(json_object(text, "the frame"))
    except InvalidFrame:
        return None  # the caller says what it expected


async def _token(ws: WebSocket) -> str:
    """The bearer token of the header, or of the first frame."""
    if ws.headers.get("authorization"):
        return bearer(ws)
    try:
        msg = await asyncio.wait_for(_frame(ws), AUTH_TIMEOUT_S)
    except TimeoutError:
        raise Refused(401, "no auth message within 10s") from None
    if not isinstance(msg, AuthFrame):
        raise Refused(401, 'the first frame must be {"type": "auth", "token": "…"}')
    return msg.token


async def chat_ws(ws: WebSocket) -> None:
    await ws.accept()
    gw = gateway_of(ws)
    sock = _Socket(ws)
    try:
        token = await _token(ws)
        who = gw.authenticate(token)
    except (Refused, AccountError) as exc:
        message = exc.message if isinstance(exc, Refused) else str(exc)
        await sock.send(ErrorFrame(status=exc.status, text=message))
        await ws.close(code=4401 if exc.status == 401 else 4400)
        return
    except WebSocketDisconnect:
        return
    await gw.hub.attach(who.id, sock.send)
    queue: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
    worker = asyncio.create_task(_turns(gw, token, sock, queue))
    subs = Subscriptions(feed_of(ws), sock.send)  # live market candles only, never events
    try:
        await sock.send(ReadyFrame(account=Account(**asdict(who.account))))
        # notifications that came while they were away (attached first: one arriving
        # meanwhile is delivered straight away or found held by this or by its notify)
        try:
            await gw.deliver_held(who.id)
        except Exception:  # the database failing: they stay held, the chat still works
            log.exception("delivering held notifications failed", user=who.id)
        while True:
            try:
                msg = await _frame(ws)
                if isinstance(msg, SubscribeFrame | UnsubscribeFrame):
                    await _subscription(subs, msg, sock)
                    continue
                if not isinstance(msg, MessageFrame):
                    raise Refused(400, 'expected {"type": "message", "text": "…"}')
            except Refused as exc:  # the socket stays open: the next frame may be right
                await sock.send(ErrorFrame(status=exc.status, text=exc.message))
                continue
            try:
                queue.put_nowait(msg.text)
            except asyncio.QueueFull:
                await sock.send(ErrorFrame(status=429, text="too many messages waiting"))
    except WebSocketDisconnect:
        pass
    finally:
        worker.cancel()
        await subs.close()
        await gw.hub.detach(who.id, sock.send)
        with contextlib.suppress(BaseException):
            await worker


async def _subscription(
    subs: Subscriptions, msg: SubscribeFrame | UnsubscribeFrame, sock: _Socket
) -> None:
    """A page's ``subscribe`` (answered ``subscribed`` or an error frame) or
    ``unsubscribe``."""
    if isinstance(msg, UnsubscribeFrame):
        subs.unsubscribe(msg.topic)
        return
    try:
        topic = await subs.subscribe(msg.topic)
    except BadTopic as exc:
        await sock.send(ErrorFrame(status=400, text=str(exc)))
    except UnknownMarket as exc:
        await sock.send(ErrorFrame(status=404, text=str(exc)))
    except TooMany as exc:
        await sock.send(ErrorFrame(status=429, text=str(exc)))
    except FeedUnavailable as exc:
        await sock.send(ErrorFrame(status=503, text=str(exc)))
    else:
        await sock.send(SubscribedFrame(topic=topic))


async def _turns(gw: Any, token: str, sock: _Socket, queue: asyncio.Queue[str]) -> None:
    while True:
        text = await queue.get()
        try:
            # checked again for every message: a session that expired or was logged out,
            # or a token revoked, since the socket opened speaks no more
            with _message("web", lambda: gw.authenticate(token)) as who:
                result = await gw.chat(who, text, "web", sock.send)
            await sock.send(
                ReplyFrame(
                    text=result.reply,
                    model=result.model,
                    tokens=result.tokens,
                    # where the turn's time went (ms): context, rag, model, tools, save…
                    timings={k: round(v, 2) for k, v in result.timings.items()},
                )
            )
        except Refused as exc:
            await sock.send(
                ErrorFrame(status=exc.status, text=exc.message, retry_after=exc.retry_after)
            )
        except (WebSocketDisconnect, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "websocket" not in str(exc).lower():
                raise
            return
        except Exception:
            log.exception("chat turn failed")
            with contextlib.suppress(Exception):
                await sock.send(
                    ErrorFrame(status=500, text="something went wrong in this turn; try again")
                )


routes = [
    Route("/api/chat", chat_http, methods=["POST"]),
    WebSocketRoute("/api/chat/ws", chat_ws),
]
