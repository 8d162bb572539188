"""The gateway reads agent tools' results through their contracts: a wrong shape fails at
run time with a clear error, and a consumer not updated to a changed result fails mypy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dexorder.contracts.agent_tools import (
    EXECUTE_TRADE,
    LIST_ALERTS,
    RUN_BACKTEST,
    BacktestRun,
    SweepRun,
    ToolResultMismatch,
)
from gateway.harness.offline import describe

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
