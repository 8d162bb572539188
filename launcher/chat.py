"""``dexorder chat``: talk to the local person's agent through the running gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

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


async def _turn(
    ws: aiohttp.ClientWebSocketResponse,
    text: str,
    next_frame: Callable[[], Awaitable[ServerFrame]] | None = None,
) -> None:
    await ws.send_str(encode(MessageFrame(text=text)))
    streamed = [False]
    while True:
        frame = await (next_frame() if next_frame else _next_frame(ws))
        if isinstance(frame, ReplyFrame):
            if not streamed[0]:
                console.print(frame.text, markup=False, highlight=False)
            else:
                console.print()
            return
        if isinstance(frame, ErrorFrame):
            raise ChatFailed(frame.text)
        _show(frame, streamed)


async def _connect(
    http: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    """A chat WebSocket the gateway has said ``ready`` on."""
    ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, heartbeat=30)
    ready = await _next_frame(ws)
    if not isinstance(ready, ReadyFrame):
        await ws.close()
        refused = ready.text if isinstance(ready, ErrorFrame) else ""
        raise ChatFailed(refused or "the gateway refused the connection")
    return ws


#: How often a conversation connects again after the gateway closed its socket (Knative
#: cuts every request, a WebSocket included, at the Service's timeout) before giving up.
RECONNECTS = 5


class _Link:
    """A chat socket read all the time, so that a close between turns is seen at once."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[ServerFrame | ChatFailed] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                await self.frames.put(await _next_frame(self.ws))
        except ChatFailed as exc:
            await self.frames.put(exc)

    @property
    def closed(self) -> bool:
        return self.reader.done()

    async def next_frame(self) -> ServerFrame:
        frame = await self.frames.get()
        if isinstance(frame, ChatFailed):
            raise frame
        return frame

    def show_waiting(self) -> None:
        """Print what came while no turn ran (events)."""
        streamed = [False]
        while not self.frames.empty():
            frame = self.frames.get_nowait()
            if not isinstance(frame, ChatFailed):
                _show(frame, streamed)

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


async def converse(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    next_line: Callable[[], Awaitable[str | None]],
) -> None:
    """Send each line ``next_line`` gives (None or an empty line ends) and print the
    replies. A socket the gateway closed between turns is connected again (with backoff)
    before the next line is sent, so no line is lost to it."""
    link = _Link(await _connect(http, url, token))

    async def reconnect() -> None:
        nonlocal link
        attempt = 0
        while link.closed:
            if attempt > RECONNECTS:
                raise ChatFailed("the gateway closed the connection and takes no new one")
            err.print("[dim]the gateway closed the connection; connecting again[/dim]")
            if attempt:
                await asyncio.sleep(min(0.25 * 2 ** (attempt - 1), 5.0))  # backoff
            attempt += 1
            with contextlib.suppress(aiohttp.ClientError, OSError, ChatFailed):
                new = _Link(await _connect(http, url, token))
                await link.close()
                link = new

    try:
        while True:
            line = await next_line()
            if line is None or not line.strip():
                return
            link.show_waiting()
            for _ in range(2):  # once more if the line never reached the gateway
                await reconnect()
                heard = [False]

                async def frame(current: _Link = link, heard: list[bool] = heard) -> ServerFrame:
                    got = await current.next_frame()
                    heard[0] = True
                    return got

                try:
                    await _turn(link.ws, line, frame)
                    break
                except (ChatFailed, ConnectionResetError, aiohttp.ClientError) as exc:
                    if not link.closed:
                        err.print(f"[red]{exc}[/red]")  # the gateway's refusal
                        break
                    if heard[0]:  # cut during the turn: the reply is lost, say so
                        err.print(f"[red]the connection was cut before the reply ({exc})[/red]")
                        break
                    # cut before the gateway heard the line: send it on a new connection
    finally:
        await link.close()


async def chat(cfg: Settings, message: str | None) -> None:
    """Send ``message`` (or, when None, each line typed) and print the replies."""
    token = mint_token(token_keys(cfg), cfg.gateway.local_user, "service", 3600)
    url = cfg.gateway.url.replace("http", "ws", 1) + "/api/chat/ws"
    try:
        async with aiohttp.ClientSession() as http:
            if message is not None:
                ws = await _connect(http, url, token)
                try:
                    await _turn(ws, message)
                finally:
                    await ws.close()
                return
            err.print("[dim]Chatting with your agent; an empty line or Ctrl-D ends.[/dim]")
            await converse(http, url, token, _typed_line)
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise ChatFailed(
            f"the gateway at {cfg.gateway.url} is not reachable ({exc}); is the platform up "
            "(`dexorder up`)?"
        ) from None


async def _typed_line() -> str | None:
    try:
        return await asyncio.to_thread(input, "you> ")
    except EOFError:
        return None
