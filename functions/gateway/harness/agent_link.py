"""The gateway as a client of the person's agent over MCP (streamable HTTP, bearer token)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import BlobResourceContents, TextResourceContents

from dexorder.contracts.agent_tools import AGENT_TOOLS, ToolResult, ToolTraits
from dexorder.contracts.chat import JsonObject, JsonValue
from gateway.harness.model import ToolSpec
from gateway.leases import check_held

#: The four context resources every turn starts from.
CONTEXT_RESOURCES = {
    "profile": "context://user-profile",
    "summary": "context://conversation-summary",
    "workspace": "context://workspace-state",
    "instructions": "context://system-prompt",
}


#: Told how far a tool got while it runs (the MCP progress notifications of the call):
#: its message, and the fraction done when the tool said so.
OnProgress = Callable[[str, float | None], Awaitable[None]]


class AgentCallError(RuntimeError):
    """A tool of the agent failed; the message is the agent's."""


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool returned: its contract's typed result (an agent tool's or the platform's
    own), or the text of an error; and whether it failed."""

    value: ToolResult | str
    is_error: bool = False

    def as_text(self) -> str:
        """What the model reads of it."""
        return self.value.for_model() if isinstance(self.value, ToolResult) else self.value

    def as_json(self) -> JsonValue:
        """The whole result as JSON values (for callers other than the model)."""
        if isinstance(self.value, ToolResult):
            return self.value.model_dump(mode="json", by_alias=True)
        return self.value


class AgentLink:
    """One MCP session with one person's agent, for the length of a turn."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._tools: list[ToolSpec] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, token: str, timeout_s: float = 300) -> AsyncIterator[AgentLink]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout_s) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            yield cls(client)

    async def tools(self) -> list[ToolSpec]:
        """The agent's tools (asked once a session: they do not change while it runs)."""
        if self._tools is None:
            listed = await self.client.list_tools()
            self._tools = [
                ToolSpec(
                    t.name,
                    t.description or "",
                    dict(t.input_schema),
                    ToolTraits.from_meta(t.meta),
                )
                for t in listed.tools
            ]
        return self._tools

    async def call(
        self, name: str, arguments: JsonObject, progress: OnProgress | None = None
    ) -> ToolOutcome:
        """Call a tool; its structured result is validated into its contract's type (a result
        of another shape raises :class:`~dexorder.contracts.agent_tools.ToolResultMismatch`).
        ``progress`` hears the tool's progress notifications while it runs."""

        # a turn whose replica lost its lease (it stalled) calls nothing more: another
        # replica may be running the person's turn, a confirmed order among it
        check_held()
        tell = progress

        # named as the SDK's ProgressFnT names them
        async def heard(progress: float, total: float | None, message: str | None) -> None:
            assert tell is not None
            await tell(message or "", progress / total if total else None)

        result = await self.client.call_tool(
            name, arguments, progress_callback=heard if tell is not None else None
        )
        if result.is_error:
            return ToolOutcome("".join(getattr(c, "text", "") for c in result.content), True)
        contract = AGENT_TOOLS.get(name)
        if contract is None:
            raise AgentCallError(f"the agent has no tool {name} in its contract")
        return ToolOutcome(contract.parse(result.structured_content))

    async def read_text(self, uri: str) -> str:
        result = await self.client.read_resource(uri)
        return "".join(c.text for c in result.contents if isinstance(c, TextResourceContents))

    async def read_bytes(self, uri: str) -> bytes:
        result = await self.client.read_resource(uri)
        for c in result.contents:
            if isinstance(c, BlobResourceContents):
                return base64.b64decode(c.blob)
        raise AgentCallError(f"{uri} holds no binary content")

    async def context(self) -> dict[str, str]:
        texts = await asyncio.gather(*(self.read_text(u) for u in CONTEXT_RESOURCES.values()))
        return dict(zip(CONTEXT_RESOURCES, texts, strict=True))


@dataclass
class ContextCache:
    """Each person's context resources, reused for ``ttl_s`` seconds (1-5 minutes).

    A tool that changes the workspace drops that person's entry, so the next turn
    does not see a watchlist or an alert list from before the change; a saved turn makes
    the next read the conversation summary again (its recent messages changed).
    """

    ttl_s: float = 120.0
    _entries: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)
    #: people whose conversation changed since their entry was read
    _said: set[str] = field(default_factory=set)
    hits: int = 0
    misses: int = 0

    async def get(self, user: str, link: AgentLink) -> dict[str, str]:
        entry = self._entries.get(user)
        now = time.monotonic()
        said = user in self._said
        self._said.discard(user)
        if entry is not None and now - entry[0] < self.ttl_s:
            self.hits += 1
            if said:  # one resource, not four
                summary = await link.read_text(CONTEXT_RESOURCES["summary"])
                entry[1]["summary"] = summary
            return entry[1]
        self.misses += 1
        context = await link.context()
        self._entries[user] = (now, context)
        return context

    def conversation_changed(self, user: str) -> None:
        """``user``'s turn was saved: their next turn reads the summary afresh."""
        self._said.add(user)

    def forget(self, user: str) -> None:
        self._entries.pop(user, None)
        self._said.discard(user)


class AgentLinks:
    """One long-lived MCP session per person's agent, shared by their turns.

    Opening a session costs ~25 ms (initialize handshake); a turn reuses the open one.
    A session is re-opened when the agent moved (a restart gives it a new address),
    after ``max_age_s`` (keep it shorter than the life of the token it is opened with),
    or after it failed.

    ``linger_s`` (Knative): a session is closed that long after the turn that used it
    (:meth:`release`), unless another turn takes it first. An open session holds an open
    request to the agent (the MCP client's stream for the server's messages), and on
    Knative an open request keeps the agent's pod from scaling to zero. None (one
    machine): sessions stay open between turns.
    """

    def __init__(self, max_age_s: float = 3000.0, linger_s: float | None = None) -> None:
        self.max_age_s = max_age_s
        self.linger_s = linger_s
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}

    def release(self, user: str) -> None:
        """A turn of ``user`` is over: with ``linger_s`` set, close their session after it."""
        if self.linger_s is None or user not in self._held:
            return
        self._cancel_closing(user)
        self._closing[user] = asyncio.create_task(self._drop_later(user, self.linger_s))

    async def _drop_later(self, user: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._closing.pop(user, None)  # drop() must not cancel the task it runs in
        async with self._locks.setdefault(user, asyncio.Lock()):
            await self.drop(user)

    def _cancel_closing(self, user: str) -> None:
        task = self._closing.pop(user, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def get(self, user: str, url: str, token: Callable[[], str]) -> AgentLink:
        self._cancel_closing(user)  # a turn takes the session: it stays open
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            held = self._held.get(user)
            if held is not None and (
                held.url != url
                or held.task.done()
                or time.monotonic() - held.opened > self.max_age_s
            ):
                await self.drop(user)
                held = None
            if held is None:
                held = _Held.start(url, token())
                self._held[user] = held
            try:
                return await asyncio.shield(held.ready)
            except BaseException:
                self._held.pop(user, None)
                raise

    async def drop(self, user: str) -> None:
        self._cancel_closing(user)
        held = self._held.pop(user, None)
        if held is not None:
            held.stop.set()
            with contextlib.suppress(BaseException):
                await held.task

    async def close(self) -> None:
        for user in list(self._held):
            await self.drop(user)


@dataclass
class _Held:
    url: str
    opened: float
    ready: asyncio.Future[AgentLink]
    stop: asyncio.Event
    task: asyncio.Task[None]

    @classmethod
    def start(cls, url: str, token: str) -> _Held:
        ready: asyncio.Future[AgentLink] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with AgentLink.open(url, token) as link:
                    ready.set_result(link)
                    await stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                    ready.exception()  # retrieved: the caller sees it through get()

        return cls(url, time.monotonic(), ready, stop, asyncio.create_task(hold()))
