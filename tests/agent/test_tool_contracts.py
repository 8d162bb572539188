"""The agent's tools as an external MCP client sees them: each publishes its contract's
output schema and traits, and answers with structured content of the contract's type."""

from __future__ import annotations

import json

import pytest
from mcp.types import TextContent

from dexorder.contracts.agent_tools import (
    AGENT_TOOLS,
    PaperTrade,
    StrategyList,
    ToolTraits,
    TradeOrder,
)
from tests.agent.conftest import Agent

pytestmark = pytest.mark.integration


async def test_every_tool_publishes_its_contract(agent: Agent) -> None:
    async with agent.client() as c:
        tools = (await c.list_tools()).tools
        assert {t.name for t in tools} == set(AGENT_TOOLS)
        for t in tools:
            assert t.output_schema is not None, t.name
            assert t.output_schema["type"] == "object", t.name
            assert ToolTraits.from_meta(t.meta) == AGENT_TOOLS[t.name].traits, t.name
        assert ToolTraits.from_meta(
            next(t.meta for t in tools if t.name == "execute_trade")
        ).needs_confirmation

        result = await c.call_tool("list_strategies", {})
        strategies = AGENT_TOOLS["list_strategies"].parse(result.structured_content)
        assert isinstance(strategies, StrategyList)
        # text consumers read the same JSON as before
        (text,) = result.content
        assert isinstance(text, TextContent)
        assert json.loads(text.text) == strategies.model_dump()
        watchlist = await c.call_tool("set_watchlist", {"tickers": ["BINANCE:BTC/USDT"]})
        assert watchlist.structured_content == {"watchlist": ["BINANCE:BTC/USDT"]}
        # a tool with results of several kinds answers with the one it made, unwrapped
        placed = await c.call_tool(
            "execute_trade",
            {
                "ticker": "BINANCE:BTC/USDT",
                "side": "buy",
                "quantity": 0.1,
                "order_type": "limit",
                "limit_price": 1.0,
            },
        )
        assert not placed.is_error, placed.content
        assert placed.structured_content is not None
        assert placed.structured_content["fill"] is None
        assert isinstance(AGENT_TOOLS["execute_trade"].parse(placed.structured_content), PaperTrade)


def _bare(schema: object) -> object:
    """A JSON schema without its words (titles, descriptions): what it accepts."""
    if isinstance(schema, dict):
        return {k: _bare(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_bare(v) for v in schema]
    return schema


async def test_the_order_the_gateway_holds_is_execute_trades_arguments(agent: Agent) -> None:
    """The gateway holds an ``execute_trade`` call as a TradeOrder until the person
    confirms it: the two must accept the same arguments."""
    async with agent.client() as c:
        tools = (await c.list_tools()).tools
    published = next(t.input_schema for t in tools if t.name == "execute_trade")
    held = TradeOrder.model_json_schema()
    assert _bare(published["properties"]) == _bare(held["properties"])
    assert set(published.get("required", [])) == set(held["required"])
