"""One way to write an agent tool: ``@box.tool(CONTRACT, "what it does")``.

The wrapper does what every tool needs: it marks the agent active (the idle clock), turns
the domain's errors (bad input, a refused order, the embedder down) into an MCP tool error
saying what was wrong, and registers the tool under its contract's name with the
contract's traits in its ``_meta``. The function's return annotation is the contract's
result type (mypy holds the two together), so the SDK publishes its output schema and
answers with ``structuredContent``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from opentelemetry.trace import Span
from pydantic import BaseModel

from agent.person import PersonAgent
from dexorder import telemetry
from dexorder.contracts.agent_tools import AgentTool
from dexorder.embeddings import EmbeddingUnavailable

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: What the domain raises for a request it refuses; the message is for the person. (Its
#: own errors — WorkspaceError, AlertError, OrderError, LiveTradingError, InvalidTicker,
#: MemoryRequestError … — are ValueErrors.)
DOMAIN_ERRORS: tuple[type[Exception], ...] = (ValueError, TimeoutError, EmbeddingUnavailable)


def _span(contract: AgentTool[R]) -> AbstractContextManager[Span]:
    """The tool's span: a child of the MCP SDK's span for the request, which continues the
    gateway's trace; an error the tool raises is recorded on it."""
    return telemetry.span(f"tool {contract.name}", {"gen_ai.tool.name": contract.name})


class ToolBox:
    """Registers ``person``'s tools and resources on ``mcp``."""

    def __init__(self, mcp: MCPServer, person: PersonAgent) -> None:
        self.mcp, self.person = mcp, person

    def tool(
        self, contract: AgentTool[R], description: str
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """An async tool (it awaits I/O: the sandbox, the broker, the embedder)."""

        def register(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(fn)
            async def run(*args: P.args, **kwargs: P.kwargs) -> BaseModel:
                self.person.activity.touch()
                with _span(contract):
                    try:
                        return contract.publish(await fn(*args, **kwargs))
                    except DOMAIN_ERRORS as exc:
                        raise ToolError(str(exc)) from None

            self._add(run, fn, contract, description)
            return fn

        return register

    def sync_tool(
        self, contract: AgentTool[R], description: str
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A blocking tool (files, git): the SDK runs it on a worker thread."""

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> BaseModel:
                self.person.activity.touch()
                with _span(contract):  # on the SDK's worker thread, the request's context
                    try:
                        return contract.publish(fn(*args, **kwargs))
                    except DOMAIN_ERRORS as exc:
                        raise ToolError(str(exc)) from None

            self._add(run, fn, contract, description)
            return fn

        return register

    def resource(
        self, uri: str, mime_type: str, description: str
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A resource; reading it marks the agent active."""

        def register(fn: Callable[P, T]) -> Callable[P, T]:
            @functools.wraps(fn)
            def read(*args: P.args, **kwargs: P.kwargs) -> T:
                self.person.activity.touch()
                return fn(*args, **kwargs)

            self.mcp.resource(uri, mime_type=mime_type, description=description)(read)
            return read

        return register

    def _add(
        self,
        run: Callable[..., object],
        fn: Callable[..., object],
        contract: AgentTool[R],
        description: str,
    ) -> None:
        # the SDK reads the parameters of ``fn`` and, as the result, the published type
        signature = inspect.signature(fn, eval_str=True)
        run.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=contract.published
        )
        self.mcp.add_tool(
            run,
            name=contract.name,
            description=description,
            meta=contract.traits.as_meta(),
            structured_output=True,
        )
