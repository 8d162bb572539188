"""Calling a person's agent over MCP the way the platform does (a token for that person)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent), first
    return first.text


class AgentCalls:
    """One MCP session with an agent: tool calls returning their JSON, or their error."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def ok(self, tool: str, **args: Any) -> Any:
        result = await self.client.call_tool(tool, args)
        assert not result.is_error, f"{tool}: {_text(result)}"
        return json.loads(_text(result))

    async def refused(self, tool: str, **args: Any) -> str:
        result = await self.client.call_tool(tool, args)
        assert result.is_error, f"{tool} was expected to fail: {_text(result)[:200]}"
        return _text(result)


@contextlib.asynccontextmanager
async def agent_session(url: str, token: str) -> AsyncIterator[AgentCalls]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield AgentCalls(client)
