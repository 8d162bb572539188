"""The Anthropic path: the official SDK against a loopback Messages API, through a whole
turn (context resources, the tool loop with a tool proxied to the agent, streaming)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dexorder.config import Settings
from dexorder.contracts.chat import ServerFrame, encode
from dexorder.tokens import token_keys
from gateway.harness.router import ModelRouter
from gateway.harness.turn import Harness
from tests.agent.conftest import Agent, serve_agent
from tests.gateway.loopback_anthropic import API_KEY, MessagesApi, serve_messages_api

pytestmark = pytest.mark.integration


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Harness, Agent, MessagesApi]]:
    async with serve_messages_api() as (url, api):
        cfg = Settings(
            home=tmp_path / "home",
            embedder={"enabled": False},
            gateway={"anthropic_api_key": API_KEY, "anthropic_base_url": url},
        )
        async with serve_agent(cfg) as agent:
            harness = Harness(cfg, token_keys(cfg), ModelRouter(cfg.gateway, API_KEY), None)
            try:
                yield harness, agent, api
            finally:
                await harness.close()


async def run(
    harness: Harness, agent: Agent, text: str, tier: str = "free"
) -> tuple[Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(frame: ServerFrame) -> None:
        sent.append(json.loads(encode(frame)))  # what a client of the chat would read

    result = await harness.turn(
        user=agent.person.user, tier=tier, channel="web", text=text, mcp_url=agent.url, send=send
    )
    return result, sent


async def test_a_turn_runs_the_tool_loop_through_the_sdk_and_streams_the_answer(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    api.replies = [
        [
            {"type": "text", "text": "Let me look at your workspace."},
            {"type": "tool_use", "id": "toolu_01", "name": "list_strategies", "input": {}},
        ],
        [{"type": "text", "text": "You have two strategies: rsi_reversion and sma_cross."}],
    ]
    result, sent = await run(harness, agent, "Which strategies do I have?")

    assert result.reply == "You have two strategies: rsi_reversion and sma_cross."
    assert result.model == "claude-haiku-4-5"
    first, second = api.requests
    assert first["model"] == "claude-haiku-4-5" and first["stream"] is True
    # the system prompt carries the agent's context resources
    assert "## Workspace" in first["system"] and "sma_cross" in first["system"]
    tools = {t["name"] for t in first["tools"]}
    assert {"get_price", "get_candles", "list_strategies", "run_backtest"} <= tools
    assert "save_message" not in tools
    # the tool ran in the agent and its real result went back to the model
    assert second["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "list_strategies",
        "input": {},
    }
    (tool_result,) = second["messages"][2]["content"]
    assert tool_result["tool_use_id"] == "toolu_01" and "sma_cross" in tool_result["content"]
    streamed = "".join(f["text"] for f in sent if f["type"] == "token")
    assert streamed == "Let me look at your workspace." + result.reply
    assert [f["state"] for f in sent if f["type"] == "tool"] == ["start", "done"]
    assert result.tokens > 0  # usage from both calls, for the budget


async def test_the_router_picks_by_tier_and_complexity_and_trades_wait_for_a_yes(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    api.replies = [
        [
            {"type": "text", "text": "I will buy it."},
            {
                "type": "tool_use",
                "id": "toolu_02",
                "name": "execute_trade",
                "input": {"ticker": "BINANCE:BTC/USDT", "side": "buy", "quantity": 0.5},
            },
        ]
    ]
    result, sent = await run(harness, agent, "write a strategy that buys, then buy 0.5 BTC", "pro")
    assert api.requests[-1]["model"] == "claude-sonnet-4-6"
    assert "Please confirm: buy 0.5 BINANCE:BTC/USDT" in result.reply
    assert [f for f in sent if f["type"] == "confirm"]
    assert not [f for f in sent if f["type"] == "tool"]  # nothing was sent to the agent
    assert not (agent.person.state_dir / "paper.json").exists()
    assert await harness.pending_order(agent.person.user) is not None


async def test_model_errors_are_told_not_raised(setup: tuple[Harness, Agent, MessagesApi]) -> None:
    harness, agent, api = setup
    api.replies = [(400, "invalid_request_error")]
    result, sent = await run(harness, agent, "hello")
    assert result.reply.startswith("Sorry, I could not answer") and "400" in result.reply
    assert sent[-1]["type"] == "token"


async def test_an_order_not_confirmed_within_its_time_is_cancelled(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    order = {"ticker": "BINANCE:BTC/USDT", "side": "buy", "quantity": 0.5}
    api.replies = [
        [{"type": "tool_use", "id": "toolu_03", "name": "execute_trade", "input": order}],
        [{"type": "text", "text": "Nothing is waiting for a yes."}],
    ]
    result, _ = await run(harness, agent, "buy 0.5 BTC")
    assert "Please confirm" in result.reply
    assert await harness.pending_order(agent.person.user) is not None
    harness.confirm_ttl_s = 0.0  # its five minutes have passed
    assert await harness.pending_order(agent.person.user) is None
    result, sent = await run(harness, agent, "yes")
    assert result.reply == "Nothing is waiting for a yes."  # an ordinary turn
    assert not [f for f in sent if f["type"] == "tool"]
    assert not (agent.person.state_dir / "paper.json").exists()


async def test_the_answer_to_a_waiting_order_costs_nothing_again(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    """The turn that asked was accounted for; a yes or no resumes it and costs nothing."""
    harness, agent, api = setup
    order = {"ticker": "BINANCE:BTC/USDT", "side": "buy", "quantity": 0.5}
    ask = [{"type": "tool_use", "id": "toolu_04", "name": "execute_trade", "input": order}]
    api.replies = [ask, ask]
    asked, _ = await run(harness, agent, "buy 0.5 BTC")
    assert asked.tokens > 0 and asked.cost_usd > 0
    refused, sent = await run(harness, agent, "no")
    assert refused.reply.startswith("Cancelled: buy 0.5 BINANCE:BTC/USDT")
    assert (refused.tokens, refused.cost_usd) == (0, 0.0)
    asked, _ = await run(harness, agent, "buy 0.5 BTC")
    placed, sent = await run(harness, agent, "yes")  # no live price here: refused by the agent
    assert [f["state"] for f in sent if f["type"] == "tool"] == ["start", "error"]
    assert (placed.tokens, placed.cost_usd) == (0, 0.0)
    assert await harness.pending_order(agent.person.user) is None
