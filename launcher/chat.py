"""``dexorder chat``: talk to the local person's agent through the running gateway."""

from __future__ import annotations

import asyncio

import aiohttp

from dexorder.config import Settings
from dexorder.contracts.chat import (
    CandlesFrame,
    ErrorFrame,
    EventFrame,
    ImageFrame,
    InvalidFrame,
    MessageFrame,
    ReadyFrame,
    ReplyFrame,
    ServerFrame,
    StatusFrame,
    TokenFrame,
    ToolFrame,
    decode_server_frame,
    encode,
)
from dexorder.tokens import mint_token, token_keys
from launcher.console import console, err


class ChatFailed(RuntimeError):
    """The gateway could not be reached or refused the message."""


def _show(frame: ServerFrame, streamed: list[bool]) -> None:
    if isinstance(frame, TokenFrame):
        console.print(frame.text, end="", markup=False, highlight=False)
        streamed[0] = True
    elif isinstance(frame, StatusFrame):
        err.print(f"[dim]{frame.text}[/dim]")
    elif isinstance(frame, ToolFrame) and frame.state in ("start", "progress", "error"):
        detail = frame.text or frame.error or ""
        err.print(f"[dim]⚙ {frame.name} {frame.state}{': ' + detail if detail else ''}[/dim]")
    elif isinstance(frame, CandlesFrame):
        rows = frame.candles
        err.print(f"[dim]chart: {frame.ticker} {frame.timeframe}, {len(rows)} candles[/dim]")
    elif isinstance(frame, ImageFrame):
        err.print(f"[dim]chart: {frame.caption or 'image'} (shown on the web page)[/dim]")
    elif isinstance(frame, EventFrame):
        err.print(f"[yellow]🔔 {frame.text}[/yellow]")


async def _next_frame(ws: aiohttp.ClientWebSocketResponse) -> ServerFrame:
    msg = await ws.receive()
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise ChatFailed("the gateway closed the connection")
    try:
        return decode_server_frame(msg.data)
    except InvalidFrame as exc:
        raise ChatFailed(f"the gateway sent a frame this client does not know: {exc}") from None


async def _turn(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    await ws.send_str(encode(MessageFrame(text=text)))
    streamed = [False]
    while True:
        frame = await _next_frame(ws)
        if isinstance(frame, ReplyFrame):
            if not streamed[0]:
                console.print(frame.text, markup=False, highlight=False)
            else:
                console.print()
            return
        if isinstance(frame, ErrorFrame):
            raise ChatFailed(frame.text)
        _show(frame, streamed)


async def chat(cfg: Settings, message: str | None) -> None:
    """Send ``message`` (or, when None, each line typed) and print the replies."""
    token = mint_token(token_keys(cfg), cfg.gateway.local_user, "service", 3600)
    url = cfg.gateway.url.replace("http", "ws", 1) + "/api/chat/ws"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, heartbeat=30) as ws,
        ):
            ready = await _next_frame(ws)
            if not isinstance(ready, ReadyFrame):
                refused = ready.text if isinstance(ready, ErrorFrame) else ""
                raise ChatFailed(refused or "the gateway refused the connection")
            if message is not None:
                await _turn(ws, message)
                return
            err.print("[dim]Chatting with your agent; an empty line or Ctrl-D ends.[/dim]")
            while True:
                try:
                    line = await asyncio.to_thread(input, "you> ")
                except EOFError:
                    return
                if not line.strip():
                    return
                try:
                    await _turn(ws, line)
                except ChatFailed as exc:
                    if "closed" in str(exc):
                        raise
                    err.print(f"[red]{exc}[/red]")
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise ChatFailed(
            f"the gateway at {cfg.gateway.url} is not reachable ({exc}); is the platform up "
            "(`dexorder up`)?"
        ) from None
