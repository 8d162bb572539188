"""Skills, subagents and workflows in whole turns: the official SDK against the loopback
Messages API (scripted per test), the person's real agent, its sandbox validating files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dexorder.contracts.agent_tools import RUN_BACKTEST, BacktestRun
from gateway.harness.model import ModelReply
from gateway.harness.skills.review_risk import RiskReview
from gateway.harness.subagents.market_analyst import SCOPE as ANALYST
from gateway.harness.turn import Harness
from tests.agent.conftest import Agent
from tests.gateway.loopback_anthropic import MessagesApi
from tests.gateway.loopback_harness import harnessed, run_turn

pytestmark = pytest.mark.integration

# line 8 calls a TA-Lib function that does not exist: the sandbox names the line
BROKEN = '''"""Long while the close is over its SMA."""
import talib

PARAMS = {"period": 20, "size": 1.0}


def signals(candles, period=20, size=1.0, **_):
    average = talib.SMAA(candles["close"], timeperiod=period)
    return (candles["close"] > average) * size
'''
FIXED = BROKEN.replace("talib.SMAA", "talib.SMA")


def tool_use(name: str, args: dict[str, Any], n: int = 1) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{name}_{n}", "name": name, "input": args}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Harness, Agent, MessagesApi]]:
    # 2024-01-01 .. 2024-01-21, hourly BTC in the lake
    async with harnessed(tmp_path, lake_days=20, workflow_rounds=2) as h:
        yield h.harness, h.agent, h.api


run = run_turn


def last_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results the last message of a request carries."""
    content = request["messages"][-1]["content"]
    assert isinstance(content, list)
    return content


def progress(sent: list[dict[str, Any]], tool: str) -> list[str]:
    return [f["text"] for f in sent if f["type"] == "tool" and f["name"] == tool and "text" in f]


async def test_a_broken_strategy_is_fixed_on_the_second_round_and_the_workflow_stops(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    ask = {"name": "over_sma", "request": "long while the close is over its 20-candle SMA"}
    api.replies = [
        [tool_use("workflow_write_strategy", ask)],
        [tool_use("write_strategy", {"name": "over_sma", "code": BROKEN}, 1)],
        [tool_use("write_strategy", {"name": "over_sma", "code": FIXED}, 2)],
        [{"type": "text", "text": "Saved over_sma after one fix."}],
    ]
    result, sent = await run(harness, agent, "write me a strategy over the SMA")

    assert result.reply == "Saved over_sma after one fix."
    # exactly: the turn, two drafts, the turn again; no third draft after success
    assert len(api.requests) == 4
    first_draft, second_draft, back = api.requests[1:]
    # the workflow's model may only write the file
    assert [t["name"] for t in first_draft["tools"]] == ["write_strategy"]
    (error,) = last_results(second_draft)
    assert error["is_error"] is True
    assert "line 8" in error["content"] and "talib.SMAA" in error["content"]
    steps = progress(sent, "workflow_write_strategy")
    assert steps[0] == "round 1: writing strategy over_sma"
    assert steps[1].startswith("round 1: validation failed: ")
    assert steps[-1].startswith("round 2: validated on ")
    (done,) = last_results(back)
    written = json.loads(done["content"])
    assert written["saved"] is True and written["rounds"] == 2 and len(written["errors"]) == 1
    saved = agent.person.workspace.read("strategies", "over_sma")
    assert saved == FIXED


async def test_a_model_that_keeps_failing_is_stopped_after_n_rounds(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    ask = {"name": "never", "request": "long over the SMA"}
    api.replies = [
        [tool_use("workflow_write_strategy", ask)],
        [tool_use("write_strategy", {"name": "never", "code": BROKEN}, 1)],
        [tool_use("write_strategy", {"name": "never", "code": BROKEN}, 2)],
        [{"type": "text", "text": "I could not get it to validate."}],
    ]
    _, sent = await run(harness, agent, "write a strategy")

    assert len(api.requests) == 4  # workflow_rounds = 2: no third draft
    (done,) = last_results(api.requests[3])
    assert done["is_error"] is True
    written = json.loads(done["content"])
    assert written["saved"] is False and written["rounds"] == 2
    assert written["stopped"].startswith("Stopped after 2 rounds: the strategy never still does")
    assert "line 8" in written["stopped"]
    tool_states = [f["state"] for f in sent if f.get("name") == "workflow_write_strategy"]
    assert tool_states[0] == "start" and tool_states[-1] == "error"
    assert "never" not in agent.person.workspace.names("strategies")


async def test_a_subagent_is_held_to_its_allowlist(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    agent.person.documents.set_watchlist([])  # no markets to fetch candles of
    api.replies = [
        [tool_use("agent_market_analyst", {"request": "how do my markets look?"})],
        # the analyst tries to write a file: refused, never run
        [tool_use("write_strategy", {"name": "sneaky", "code": FIXED})],
        [{"type": "text", "text": "Nothing on your watchlist to analyse."}],
        [{"type": "text", "text": "Your watchlist is empty."}],
    ]
    result, sent = await run(harness, agent, "analyse my watchlist")

    assert result.reply == "Your watchlist is empty."
    analyst_first, analyst_second = api.requests[1:3]
    offered = {t["name"] for t in analyst_first["tools"]}
    assert offered <= ANALYST.tools and "write_strategy" not in offered
    assert "You are a market analyst" in analyst_first["system"]
    (refused,) = last_results(analyst_second)
    assert refused["is_error"] is True
    assert refused["content"].startswith("write_strategy is not available to the market analyst")
    assert "sneaky" not in agent.person.workspace.names("strategies")
    assert ("write_strategy", "error") in [(f.get("name"), f.get("state")) for f in sent]
    (answer,) = last_results(api.requests[3])
    assert json.loads(answer["content"])["analysis"] == "Nothing on your watchlist to analyse."


async def test_a_skill_called_as_a_tool_returns_its_typed_output(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    good = {
        "equity": 10_000,
        "cash": 10_000,
        "positions": [],
        "warnings": [],
        "summary": "All in cash: no risk taken.",
    }
    api.replies = [
        [tool_use("skill_review_risk", {})],
        [tool_use("answer", {"summary": "fine"}, 1)],  # not the shape: sent back
        [tool_use("answer", good, 2)],
        [{"type": "text", "text": "You hold only cash."}],
    ]
    result, _ = await run(harness, agent, "review my positions' risk")

    assert result.reply == "You hold only cash."
    turn_tools = {t["name"]: t for t in api.requests[0]["tools"]}
    assert {"skill_review_risk", "skill_market_summary", "skill_explain_backtest"} <= set(
        turn_tools
    )
    # the router suggested the skill made for the request
    assert "skill_review_risk is made for this request" in api.requests[0]["system"]
    skill_first, skill_second = api.requests[1:3]
    assert {t["name"] for t in skill_first["tools"]} == {"get_positions", "get_price", "answer"}
    answer_tool = next(t for t in skill_first["tools"] if t["name"] == "answer")
    assert answer_tool["input_schema"] == RiskReview.model_json_schema()
    assert "get_positions" in skill_first["messages"][0]["content"]  # gathered first
    (wrong,) = last_results(skill_second)
    assert wrong["is_error"] is True and "does not fit its shape" in wrong["content"]
    (typed,) = last_results(api.requests[3])
    review = RiskReview.model_validate_json(typed["content"])
    assert review.summary == "All in cash: no risk taken." and review.equity == 10_000


async def test_the_strategy_author_plans_writes_fixes_backtests_and_reports(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    ask = {
        "name": "over_sma",
        "request": "long while the close is over its SMA",
        "start": "2024-01-02",
        "end": "2024-01-20",
    }
    api.replies = [
        [tool_use("agent_strategy_author", ask)],
        [{"type": "text", "text": "Plan: long while close > SMA(20), flat otherwise."}],
        [tool_use("write_strategy", {"name": "over_sma", "code": BROKEN}, 1)],
        [tool_use("write_strategy", {"name": "over_sma", "code": FIXED}, 2)],
        [{"type": "text", "text": "over_sma traded often; judge it on more months."}],
        [{"type": "text", "text": "Done: over_sma is saved and backtested."}],
    ]
    result, sent = await run(harness, agent, "write a strategy over the SMA")

    assert result.reply == "Done: over_sma is saved and backtested."
    assert len(api.requests) == 6
    plan, first_draft, _, report = api.requests[1:5]
    # its context: the person's strategies and indicators, the SDK's documented interfaces
    assert "sma_cross" in plan["system"] and "def signals(candles" in plan["system"]
    assert "rsi" in plan["system"] and "tools" not in plan
    assert "Plan: long while close > SMA(20)" in first_draft["messages"][0]["content"]
    assert "Backtest on BINANCE:BTC/USDT 1h" in report["messages"][0]["content"]
    (done,) = last_results(api.requests[5])
    authored = json.loads(done["content"])
    assert authored["written"]["rounds"] == 2 and authored["written"]["saved"] is True
    assert authored["report"] == "over_sma traded often; judge it on more months."
    assert authored["chart"].startswith("backtest://") and "sharpe" in authored["figures"]
    assert [f["caption"] for f in sent if f["type"] == "image"] == [
        "Backtest of over_sma on BINANCE:BTC/USDT"
    ]
    steps = progress(sent, "agent_strategy_author")
    assert steps[0] == "reading your strategies and indicators"
    assert steps[1] == "plan: Plan: long while close > SMA(20), flat otherwise."
    assert "backtesting over_sma on BINANCE:BTC/USDT 1h" in steps


async def test_a_subagent_stops_at_its_own_round_budget(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    agent.person.documents.set_watchlist([])
    looping = [[tool_use("list_alerts", {}, n)] for n in range(ANALYST.max_rounds)]
    api.replies = [
        [tool_use("agent_market_analyst", {})],
        *looping,
        [{"type": "text", "text": "The analyst ran out of rounds."}],
    ]
    result, _ = await run(harness, agent, "analyse my watchlist")

    assert result.reply == "The analyst ran out of rounds."
    assert len(api.requests) == 1 + ANALYST.max_rounds + 1  # no call past its budget
    (answer,) = last_results(api.requests[-1])
    analysis = json.loads(answer["content"])
    assert analysis["stopped"] == f"the market analyst stopped after {ANALYST.max_rounds} rounds"
    assert analysis["rounds"] == ANALYST.max_rounds


async def test_a_budget_used_up_inside_a_subagent_stops_it_and_the_turn(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    harness, agent, api = setup
    agent.person.documents.set_watchlist([])
    counted: list[int] = []

    async def meter(reply: ModelReply) -> str | None:
        counted.append(reply.tokens)
        return "your monthly budget is used up" if len(counted) >= 2 else None

    api.replies = [
        [tool_use("agent_market_analyst", {})],
        [tool_use("list_alerts", {}, 1)],  # over budget with this answer: not run
        [{"type": "text", "text": "Nothing to add."}],
    ]
    result, sent = await run(harness, agent, "analyse my watchlist", meter)

    assert len(api.requests) == 3 and len(counted) == 3  # every call counted, none more
    (answer,) = last_results(api.requests[2])
    stopped = json.loads(answer["content"])["stopped"]
    assert stopped == "the market analyst stopped: your monthly budget is used up"
    starts = [f["name"] for f in sent if f["type"] == "tool" and f["state"] == "start"]
    assert starts.count("list_alerts") == 1  # the analyst's gathering; not the model's call
    assert result.tokens == sum(counted)  # the subagent's tokens are the turn's


async def test_the_strategy_author_is_told_the_persons_earlier_backtests(
    setup: tuple[Harness, Agent, MessagesApi],
) -> None:
    """Its context holds the runs the agent kept (``list_backtests``): the earlier runs of
    the strategy it changes with their figures, else the person's latest runs."""
    harness, agent, api = setup
    market = {"ticker": "BINANCE:BTC/USDT", "timeframe": "1h", "end": "2024-01-20"}
    async with agent.client() as c:
        ran: dict[str, BacktestRun] = {}
        for strategy in ("sma_cross", "rsi_reversion"):
            done = await c.call_tool(
                "run_backtest", {"strategy": strategy, "start": "2024-01-02", **market}
            )
            assert not done.is_error, done.content
            kept = RUN_BACKTEST.parse(done.structured_content)
            assert isinstance(kept, BacktestRun)
            ran[strategy] = kept
    sma, rsi = ran["sma_cross"], ran["rsi_reversion"]
    sharpe = sma.figures["sharpe"]
    assert isinstance(sharpe, float)

    def author(name: str) -> list[Any]:
        """The author's model plans, then drafts a broken file twice (nothing is saved, so
        no backtest and no report call follow)."""
        code = BROKEN.replace("talib.SMAA", "talib.NOPE")
        return [
            [tool_use("agent_strategy_author", {"name": name, "request": "long over its SMA"})],
            [{"type": "text", "text": "Plan: long over SMA(20)."}],
            [tool_use("write_strategy", {"name": name, "code": code}, 1)],
            [tool_use("write_strategy", {"name": name, "code": code}, 2)],
            [{"type": "text", "text": "It did not validate."}],
        ]

    api.replies = author("sma_cross")  # changing a strategy that was backtested
    _, sent = await run(harness, agent, "change sma_cross to hold over its SMA")
    system = api.requests[1]["system"]
    assert "You are a strategy author" in system
    earlier = system.split("## Earlier backtests of sma_cross\n", 1)[1].split("\n## ", 1)[0]
    assert earlier.startswith(
        f"- sma_cross on BINANCE:BTC/USDT 1h, 2024-01-02 00:00 to 2024-01-20 00:00 "
        f"({sma.candles} candles; fast={sma.params['fast']}"
    )
    assert f"run {sma.id} at " in earlier and f"sharpe {sharpe:.4g}" in earlier
    assert rsi.id not in earlier  # another strategy's runs are not this one's
    started = [f["name"] for f in sent if f["type"] == "tool" and f["state"] == "start"]
    assert "list_backtests" in started  # the person sees it read them

    api.requests.clear()
    api.replies = author("over_sma")  # a new one: the person's latest runs, newest first
    await run(harness, agent, "write a strategy over the SMA")
    system = api.requests[1]["system"]
    latest = system.split("## The person's latest backtests (none of over_sma yet)\n", 1)[1]
    assert latest.index(f"run {rsi.id} at ") < latest.index(f"run {sma.id} at ")
    assert f"sharpe {sharpe:.4g}" in latest
