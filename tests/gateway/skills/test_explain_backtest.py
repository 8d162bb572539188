"""The explain_backtest skill's offline answer: rules from the docstring, figures, risks."""

from __future__ import annotations

from dexorder.contracts.agent_tools import BacktestRun, SourceFile
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.skills.explain_backtest import CAVEAT, SKILL, Ask


def test_few_trades_and_a_deep_drawdown_are_called_out() -> None:
    source = SourceFile(name="dip", code='"""Buy the dip.\n\nMore."""\nPARAMS = {}\n')
    run = BacktestRun(
        id="b1",
        strategy="dip",
        ticker="BINANCE:BTC/USDT",
        timeframe="1h",
        candles=720,
        params={},
        mode="vectorised",
        figures={"total_return": 0.12, "sharpe": 0.3, "max_drawdown": -0.31, "trades": 4},
        trades=[],
    )
    found = [("read_strategy", ToolOutcome(source)), ("run_backtest", ToolOutcome(run))]
    told = SKILL.offline(Ask(strategy="dip"), found)
    assert told.rules == "Buy the dip."
    assert told.points == [
        "total return 12.00% over 720 candles of 1h",
        "Sharpe ratio 0.30",
        "worst drawdown 31.00%",
    ]
    assert len(told.risks) == 3 and "only 4 trades" in told.risks[2]
    assert told.caveat == CAVEAT and told.text().endswith(CAVEAT)
