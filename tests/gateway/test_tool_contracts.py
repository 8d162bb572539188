"""The gateway reads agent tools' results through their contracts: a wrong shape fails at
run time with a clear error, and a consumer not updated to a changed result fails mypy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from langgraph.runtime import Runtime
from mcp import Client

from dexorder.config import Settings
from dexorder.contracts.agent_tools import (
    EXECUTE_TRADE,
    LIST_ALERTS,
    RUN_BACKTEST,
    BacktestRun,
    SweepRun,
    ToolResultMismatch,
    ToolTraits,
    TradeOrder,
)
from dexorder.contracts.chat import CandlesFrame, ConfirmFrame
from dexorder.contracts.platform_tools import (
    GET_CANDLES,
    PLATFORM_TOOLS,
    Backfilled,
    CandleSummary,
    Price,
)
from gateway.harness.agent_link import AgentLink, ContextCache, ToolOutcome
from gateway.harness.graph import TurnDeps, _send_attachment, run_tools
from gateway.harness.model import ModelReply, ToolCall
from gateway.harness.offline import OfflineModel, describe
from gateway.harness.platform_tools import SPECS, PlatformTools

ROOT = Path(__file__).resolve().parents[2]


def test_a_wrong_shaped_result_fails_loudly() -> None:
    with pytest.raises(ToolResultMismatch, match="list_alerts returned a result its contract"):
        LIST_ALERTS.parse({"alerts": [{"id": "a1", "ticker": "BINANCE:BTC/USDT"}]})
    with pytest.raises(ToolResultMismatch, match="no structured result"):
        LIST_ALERTS.parse(None)
    with pytest.raises(ToolResultMismatch, match="execute_trade"):
        EXECUTE_TRADE.parse({"status": "placed"})
    with pytest.raises(ToolResultMismatch):  # the offline model's reading too, not a KeyError
        describe("list_alerts", {"alerts": [{"price": 1}]})


def test_a_union_result_is_unwrapped_and_read_as_its_member() -> None:
    sweep = {
        "id": "r1",
        "strategy": "sma",
        "ticker": "BINANCE:BTC/USDT",
        "timeframe": "1h",
        "candles": 10,
        "sweep": [{"params": {"fast": 5}, "sharpe": 1.5}],
        "rank_by": "sharpe",
        "combinations": 1,
    }
    run = RUN_BACKTEST.parse(sweep)
    assert isinstance(run, SweepRun) and run.sweep[0].figures() == {"sharpe": 1.5}
    one = BacktestRun.model_validate(
        {
            **{k: sweep[k] for k in ("id", "strategy", "ticker", "timeframe", "candles")},
            "params": {},
            "mode": "long",
            "figures": {"sharpe": 1.0},
            "trades": [
                {
                    "side": "buy",
                    "entry_time": "t0",
                    "exit_time": "t1",
                    "entry_price": 1.0,
                    "exit_price": 2.0,
                    "quantity": 1.0,
                    "pnl": 1.0,
                    "return": 1.0,
                    "reason": "signal",
                }
            ]
            * 30,
            "equity_curve": [["t0", 1.0]],
            "chart": "backtest://r1/chart.png",
        }
    )
    seen = RUN_BACKTEST.parse_json(one.for_model())  # what the model reads is a result too
    assert isinstance(seen, BacktestRun)
    assert seen.trades_shown == 20 and len(seen.trades) == 20 and seen.equity_curve == []
    assert '"return"' in one.for_model()
    attachment = one.attachment()
    assert attachment is not None and attachment.uri == "backtest://r1/chart.png"


def test_changing_a_result_type_without_its_consumer_fails_mypy(tmp_path: Path) -> None:
    """Rename a field of a contract model in a copy of the core package: mypy then fails
    on the gateway's consumer (the offline model's descriptions)."""
    shadow = tmp_path / "dexorder"
    shutil.copytree(ROOT / "dexorder", shadow, ignore=shutil.ignore_patterns("__pycache__"))
    contract = shadow / "contracts" / "agent_tools.py"
    source = contract.read_text()
    changed = source.replace(
        "class Watchlist(ToolResult):\n    watchlist: list[str]",
        "class Watchlist(ToolResult):\n    tickers: list[str]",
    )
    assert changed != source
    consumer = ROOT / "functions" / "gateway" / "harness" / "offline.py"

    def mypy(package_root: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--follow-imports=silent",
                "--ignore-missing-imports",
                "--no-incremental",
                "--explicit-package-bases",
                str(consumer),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"MYPYPATH": f"{package_root}:{ROOT / 'functions'}", "PATH": "/usr/bin:/bin"},
            timeout=600,
        )

    contract.write_text(changed)
    failed = mypy(tmp_path)  # (unchanged, the consumer passes: make lint runs mypy on it)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    errors = [line for line in failed.stdout.splitlines() if ": error:" in line]
    assert errors and all("offline.py" in e and "watchlist" in e for e in errors), errors


# --- the gateway's own tools ------------------------------------------------------------


def _summary() -> CandleSummary:
    return CandleSummary(
        ticker="BINANCE:BTC/USDT",
        timeframe="1h",
        count=2,
        start="2024-01-01T00:00:00Z",
        end="2024-01-01T01:00:00Z",
        first_close=100.0,
        last_close=101.5,
        high=102.0,
        low=99.0,
        candles=[
            (1_704_067_200_000, 99.5, 102.0, 99.0, 100.0),
            (1_704_070_800_000, 100, 101, 100, 101.5),
        ],
    )


def test_platform_results_are_their_contracts_for_the_model_and_the_offline_model() -> None:
    summary = _summary()
    seen = json.loads(summary.for_model())  # the chart rows go to the person, not the model
    assert "candles" not in seen and (seen["from"], seen["to"], seen["count"]) == (
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00Z",
        2,
    )
    assert GET_CANDLES.parse_json(summary.for_model()).last_close == 101.5
    assert describe("get_candles", seen).startswith(
        "ticker BINANCE:BTC/USDT, timeframe 1h, count 2"
    )
    price = Price(ticker="BINANCE:BTC/USDT", last=42_000.5, time=None)
    assert describe("get_price", json.loads(price.for_model())) == (
        "BINANCE:BTC/USDT last traded at 42,000.50."
    )
    done = Backfilled(ticker="BINANCE:BTC/USDT", timeframe="1d", start="a", end="b")
    assert json.loads(done.for_model()) == {
        "ticker": "BINANCE:BTC/USDT",
        "timeframe": "1d",
        "from": "a",
        "to": "b",
        "ready": True,
    }
    assert describe("remember", {"remembered": "likes ETH"}) == "I will remember: likes ETH"
    with pytest.raises(ToolResultMismatch, match="get_price"):
        describe("get_price", {"ticker": "BINANCE:BTC/USDT"})  # no last: not a Price
    # the gateway's specs carry their contracts' traits
    assert {s.name: s.traits for s in SPECS}["get_candles"] == GET_CANDLES.traits
    assert GET_CANDLES.traits.attachment and set(PLATFORM_TOOLS) >= {s.name for s in SPECS}


def _deps(traits: dict[str, ToolTraits], sent: list[object]) -> TurnDeps:
    """A turn's dependencies for sending attachments only (no agent, no model call)."""

    async def send(frame: object) -> None:
        sent.append(frame)

    return TurnDeps(
        user="u",
        tier="free",
        channel="web",
        link=AgentLink(cast(Client, None)),  # a chart needs nothing of the agent
        model=OfflineModel(),
        tools=[],
        traits=traits,
        platform=PlatformTools(Settings()),
        knowledge=None,
        context=ContextCache(),
        send=send,
    )


async def test_a_chart_goes_to_the_person_by_the_attachment_trait_not_the_tool_name() -> None:
    sent: list[object] = []
    deps = _deps({"market_snapshot": ToolTraits(attachment=True)}, sent)
    outcome = ToolOutcome(_summary())
    await _send_attachment(deps, ToolCall("c1", "market_snapshot", {}), outcome)
    assert len(sent) == 1 and deps.attachments == sent
    frame = sent[0]
    assert isinstance(frame, CandlesFrame)
    assert (frame.ticker, frame.timeframe, len(frame.candles)) == ("BINANCE:BTC/USDT", "1h", 2)
    assert "candles" not in json.loads(outcome.as_text())
    # without the trait, even under the old name, nothing goes out
    quiet: list[object] = []
    await _send_attachment(_deps({}, quiet), ToolCall("c2", "get_candles", {}), outcome)
    assert quiet == []


async def test_an_order_is_held_as_execute_trades_arguments_and_a_wrong_one_is_sent_back() -> None:
    """An order is checked against TradeOrder before the person is asked: a wrong one goes
    back to the model as a failed tool call, nothing is held; a right one is held typed."""
    sent: list[object] = []
    deps = _deps({EXECUTE_TRADE.name: EXECUTE_TRADE.traits}, sent)
    turn = Runtime(context=deps)
    wrong = {"ticker": "BINANCE:BTC/USDT", "side": "hold", "quantity": -1}
    state = await run_tools(
        {"messages": [], "last": ModelReply("", [ToolCall("c1", EXECUTE_TRADE.name, wrong)])},
        turn,
    )
    (message,) = state["messages"]
    assert message["role"] == "user" and not isinstance(message["content"], str)
    (block,) = message["content"]
    assert block.get("is_error") and block["tool_use_id"] == "c1"
    assert "side" in str(block.get("content")) and "quantity" in str(block.get("content"))
    assert state.get("pending") is None and sent == []

    right = {"ticker": "BINANCE:BTC/USDT", "side": "buy", "quantity": 0.5}
    state = await run_tools(
        {"messages": [], "last": ModelReply("", [ToolCall("c2", EXECUTE_TRADE.name, right)])},
        turn,
    )
    # held in the turn's state (checkpointed where the graph waits for the "yes")
    pending = state.get("pending")
    assert pending is not None
    assert TradeOrder.model_validate(pending) == TradeOrder(
        ticker="BINANCE:BTC/USDT", side="buy", quantity=0.5
    )
    assert "Please confirm: buy 0.5 BINANCE:BTC/USDT (market, paper)" in state["reply"]
    (frame,) = sent
    assert isinstance(frame, ConfirmFrame)
    assert frame.order == {**right, "order_type": "market", "mode": "paper"}
