"""The offline model's rules for skills, subagents and workflows: which plain requests
reach them, and which do not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.harness.offline import plan

NOW = datetime(2024, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "tool", "args"),
    [
        ("review my positions' risk", "skill_review_risk", {}),
        ("what's the risk exposure of my portfolio?", "skill_review_risk", {}),
        ("summarise the market for my watchlist", "skill_market_summary", {}),
        ("analyse my watchlist", "agent_market_analyst", {"request": "analyse my watchlist"}),
        (
            "explain the backtest of sma_cross on 4h since January",
            "skill_explain_backtest",
            {"strategy": "sma_cross", "timeframe": "4h", "start": "2024-01-01"},
        ),
        (
            "write a strategy called rsi_dip that buys when RSI is under 30",
            "agent_strategy_author",
            {"name": "rsi_dip"},
        ),
        ("create an RSI strategy", "agent_strategy_author", {"name": "my_rsi"}),
        ("make me a new mean-reversion strategy", "agent_strategy_author", {"name": "my_strategy"}),
        (
            "write a strategy called dip, backtest from 2024-01-02 to 2024-01-20",
            "agent_strategy_author",
            {"start": "2024-01-02", "end": "2024-01-20"},
        ),
        ("write an indicator called my_atr (ATR)", "workflow_write_indicator", {"name": "my_atr"}),
        (
            "sweep sma_cross by sortino",
            "workflow_sweep",
            {"strategy": "sma_cross", "rank_by": "sortino"},
        ),
        ("tune my strategy rsi_reversion", "workflow_sweep", {"strategy": "rsi_reversion"}),
    ],
)
def test_plain_requests_reach_skills_subagents_and_workflows(
    text: str, tool: str, args: dict[str, str]
) -> None:
    found = plan(text, NOW)
    assert found is not None and found[0] == tool
    assert args.items() <= found[1].items()


@pytest.mark.parametrize(
    ("text", "tool"),
    [
        ("show the strategy sma_cross", "read_strategy"),
        ("show me the code of strategy sma_cross", "list_strategies"),
        ("optimise my portfolio", "get_positions"),
        ("backtest sma_cross on 1h since January", "run_backtest"),
        ("list my strategies", "list_strategies"),
    ],
)
def test_other_requests_keep_their_tools(text: str, tool: str) -> None:
    found = plan(text, NOW)
    assert found is not None and found[0] == tool
