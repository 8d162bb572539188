"""Without an API key (``dexorder up`` out of the box) the offline model still reaches the
skills, subagents and workflows from plain requests: a real agent, its sandbox, its lake."""

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
from tests.agent.conftest import Agent, fill_lake, serve_agent

pytestmark = pytest.mark.integration


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Harness, Agent]]:
    cfg = Settings(home=tmp_path / "home", embedder={"enabled": False})
    fill_lake(cfg, days=20)  # 2024-01-01 .. 2024-01-21, hourly BTC
    async with serve_agent(cfg) as agent:
        harness = Harness(cfg, token_keys(cfg), ModelRouter(cfg.gateway, None), None)
        try:
            yield harness, agent
        finally:
            await harness.close()


async def run(harness: Harness, agent: Agent, text: str) -> tuple[Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(frame: ServerFrame) -> None:
        sent.append(json.loads(encode(frame)))

    result = await harness.turn(
        user=agent.person.user, tier="free", channel="web", text=text, mcp_url=agent.url, send=send
    )
    return result, sent


def tools(sent: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (f["name"], f["state"]) for f in sent if f["type"] == "tool" and f["state"] != "progress"
    ]


async def test_the_strategy_author_plans_writes_validates_backtests_and_charts(
    setup: tuple[Harness, Agent],
) -> None:
    harness, agent = setup
    result, sent = await run(
        harness,
        agent,
        "write a strategy called rsi_dip that buys when RSI is under 30, "
        "backtest from 2024-01-02 to 2024-01-20",
    )
    assert result.reply.startswith("[offline model] Saved the strategy rsi_dip (first try)")
    assert "Backtest on BINANCE:BTC/USDT 1h" in result.reply
    assert "talib.RSI" in agent.person.workspace.read("strategies", "rsi_dip")
    ran = tools(sent)
    assert ran[0] == ("agent_strategy_author", "start") and ran[-1] == (
        "agent_strategy_author",
        "done",
    )
    inner = [name for name, state in ran if state == "start"][1:]
    assert inner == [
        "list_strategies",
        "list_indicators",
        "list_backtests",  # of rsi_dip: none yet,
        "list_backtests",  # so the person's latest
        "search_conversation",
        "write_strategy",
        "run_backtest",
    ]
    steps = [f["text"] for f in sent if f["type"] == "tool" and f["state"] == "progress"]
    assert steps[0] == "reading your strategies and indicators"
    assert steps[1].startswith("plan: Rules: Long when RSI dips under 30")
    assert any(s.startswith("round 1: validated on ") for s in steps)
    assert [f["type"] for f in sent if f["type"] == "image"] == ["image"]  # the chart


async def test_skills_and_the_sweep_answer_plain_requests(setup: tuple[Harness, Agent]) -> None:
    harness, agent = setup
    risk, _ = await run(harness, agent, "review my positions' risk")
    assert risk.reply == "[offline model] No open positions: all 10,000.00 USDT is in cash."

    swept, sent = await run(harness, agent, "sweep sma_cross from 2024-01-02 to 2024-01-20")
    assert swept.reply.startswith(
        "[offline model] Swept 9 combinations of sma_cross: best by sharpe"
    )
    assert "flattered by the choosing" in swept.reply
    steps = [f["text"] for f in sent if f["type"] == "tool" and f["state"] == "progress"]
    assert steps[0] == "grid: {'fast': [5, 10, 15], 'slow': [15, 30, 45]} (9 combinations)"

    indicator, _ = await run(harness, agent, "write an indicator called my_atr (ATR)")
    assert indicator.reply.startswith("[offline model] Saved the indicator my_atr (first try)")
    assert "talib.ATR" in agent.person.workspace.read("indicators", "my_atr")
