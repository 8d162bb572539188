"""Skill: explain a backtest — what the strategy does, how it fared, what to distrust."""

from __future__ import annotations

import ast
import re

from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import BacktestRun, Figure, SourceFile
from gateway.harness.reports import Report
from gateway.harness.skills.registry import Call, Gathered, Skill, first

CAVEAT = (
    "A backtest shows how rules would have done on past candles, after fees and slippage; "
    "it says nothing certain about the future."
)


class Ask(BaseModel):
    strategy: str = Field(description="the strategy's name, e.g. sma_cross", max_length=64)
    ticker: str = "BINANCE:BTC/USDT"
    timeframe: str = "1h"
    start: str = Field("2024-01-01", description="YYYY-MM-DD")
    end: str = Field("2024-01-31", description="YYYY-MM-DD")


class BacktestExplanation(Report):
    strategy: str
    #: what the strategy does, in a sentence
    rules: str
    figures: dict[str, Figure]
    #: what went well and what did not
    points: list[str]
    #: what to distrust about the result
    risks: list[str]
    caveat: str = CAVEAT

    def text(self) -> str:
        lines = [f"{self.strategy}: {self.rules}", *[f"- {p}" for p in self.points]]
        lines += [f"- Risk: {r}" for r in self.risks]
        return "\n".join([*lines, self.caveat])


async def gather(ask: Ask, call: Call) -> Gathered:
    run = {k: v for k, v in ask.model_dump().items()}
    return [
        ("read_strategy", await call("read_strategy", {"name": ask.strategy})),
        ("run_backtest", await call("run_backtest", run)),
    ]


def _num(figures: dict[str, Figure], key: str) -> float | None:
    value = figures.get(key)
    return float(value) if isinstance(value, int | float) else None


def offline(ask: Ask, found: Gathered) -> BacktestExplanation:
    source, run = first(found, SourceFile), first(found, BacktestRun)
    rules = "(its source could not be read)"
    if source is not None:
        try:
            rules = (ast.get_docstring(ast.parse(source.code)) or "no docstring").splitlines()[0]
        except SyntaxError:
            rules = "its source does not parse"
    if run is None:
        failed = "; ".join(o.as_text() for _, o in found if o.is_error) or "no result"
        return BacktestExplanation(
            strategy=ask.strategy, rules=rules, figures={}, points=[], risks=[failed]
        )
    f = run.figures
    points, risks = [], []
    if (ret := _num(f, "total_return")) is not None:
        points.append(f"total return {ret:.2%} over {run.candles} candles of {run.timeframe}")
    if (sharpe := _num(f, "sharpe")) is not None:
        points.append(f"Sharpe ratio {sharpe:.2f}")
        if sharpe < 0.5:
            risks.append("a Sharpe ratio under 0.5: the return barely pays for its swings")
    if (dd := _num(f, "max_drawdown")) is not None:
        points.append(f"worst drawdown {abs(dd):.2%}")
        if abs(dd) > 0.2:
            risks.append("a drawdown over 20%: hard to sit through with real money")
    trades = _num(f, "trades") or len(run.trades)
    if trades < 10:
        risks.append(f"only {int(trades)} trades: too few to tell skill from luck")
    return BacktestExplanation(
        strategy=run.strategy, rules=rules, figures=f, points=points, risks=risks
    )


SKILL = Skill(
    name="explain_backtest",
    description="Backtest a strategy and explain the result: its rules, its figures, what "
    "went well, what to distrust.",
    prompt="You explain backtests to a trader in plain words. Read the strategy's source and "
    "its backtest figures; say what the rules do, how it fared (return, Sharpe, drawdown, "
    "trades) and what to distrust (few trades, one market, one period, overfitting).",
    tools=frozenset({"read_strategy", "run_backtest"}),
    input=Ask,
    output=BacktestExplanation,
    gather=gather,
    offline=offline,
    asks=re.compile(r"\bexplain\b.*\bbacktest", re.I),
)
