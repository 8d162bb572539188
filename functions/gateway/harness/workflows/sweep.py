"""Workflow: a backtest sweep — propose a grid, run it, report the best by a stated metric.

    START ─ propose ─ run ─ report ─ END

``propose`` takes the grid the model gave, or builds one around the strategy's ``PARAMS``
(each numeric parameter at 0.5x, 1x, 1.5x its default; sizes and stops left alone); ``run``
sends it to the agent as one ``run_backtest`` with list values (the agent sweeps them);
``report`` names the best combination by ``rank_by`` next to the default's and the
median's figures, with the caveat that the best of many in-sample runs flatters itself.
"""

from __future__ import annotations

import ast
import itertools
import statistics
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import Figure, ParamValue, Scalar, SourceFile, SweepRun
from dexorder.contracts.chat import JsonObject
from gateway.harness.model import ToolCall
from gateway.harness.reports import Report
from gateway.harness.subagents.loop import Delegation

#: parameters a sweep leaves alone: they size or guard trades rather than make the rule
_FIXED = {"size", "stop_loss", "take_profit"}
#: most combinations one sweep runs
MOST = 64
Metric = Literal["sharpe", "sortino", "total_return", "cagr", "profit_factor"]

CAVEAT = (
    "The best of {n} combinations on the same candles is flattered by the choosing: expect "
    "it to do worse on candles it has not seen. Check it on another period or market before "
    "trusting it."
)


class Ask(BaseModel):
    strategy: str = Field(max_length=64)
    ticker: str = "BINANCE:BTC/USDT"
    timeframe: str = "1h"
    start: str = Field("2024-01-01", description="YYYY-MM-DD")
    end: str = Field("2024-01-31", description="YYYY-MM-DD")
    rank_by: Metric = "sharpe"
    #: values to try per parameter; left out: a grid around the strategy's PARAMS
    grid: dict[str, list[Scalar]] | None = None


class SweepReport(Report):
    strategy: str
    metric: str
    grid: dict[str, list[Scalar]]
    combinations: int
    best: dict[str, ParamValue]
    best_figures: dict[str, Figure]
    median: float | None
    caveat: str

    def text(self) -> str:
        best = self.best_figures.get(self.metric)
        shown = f"{best:.4g}" if isinstance(best, float) else str(best)
        median = f"{self.median:.4g}" if self.median is not None else "n/a"
        return (
            f"Swept {self.combinations} combinations of {self.strategy}: best by "
            f"{self.metric} is {self.best} ({self.metric} {shown}; the median combination "
            f"{median}). {self.caveat}"
        )


def propose(params: dict[str, Any]) -> dict[str, list[Scalar]]:
    """A grid around ``params``' defaults: 0.5x, 1x, 1.5x of each numeric one (ints stay ints,
    three parameters at most, :data:`MOST` combinations at most)."""
    grid: dict[str, list[Scalar]] = {}
    for name, value in params.items():
        if name in _FIXED or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, int):
            values: list[Scalar] = [*sorted({max(1, round(value * f)) for f in (0.5, 1, 1.5)})]
        else:
            values = [round(value * f, 6) for f in (0.5, 1, 1.5)]
        grid[name] = values
        if len(grid) == 3:
            break
    while grid and len(list(itertools.product(*grid.values()))) > MOST:
        grid.popitem()
    return grid


def params_of(code: str) -> dict[str, Any]:
    """A strategy file's ``PARAMS`` literal (empty when it has none)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PARAMS" for t in node.targets
        ):
            try:
                found = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


class SweepState(TypedDict, total=False):
    grid: dict[str, list[Scalar]]
    run: SweepRun | None
    error: str | None
    report: SweepReport | None


@dataclass
class _Deps:
    d: Delegation
    ask: Ask
    shown_as: str


def _call(tool: str, args: JsonObject) -> ToolCall:
    return ToolCall(f"call_{uuid.uuid4().hex[:12]}", tool, args)


async def _propose(state: SweepState, runtime: Runtime[_Deps]) -> SweepState:
    w = runtime.context
    grid = w.ask.grid
    if not grid:
        source = await w.d.run_tool(_call("read_strategy", {"name": w.ask.strategy}))
        if not isinstance(source.value, SourceFile):
            return {"error": source.as_text()}
        grid = propose(params_of(source.value.code))
    if not grid:
        return {"error": f"{w.ask.strategy} has no numeric PARAMS to sweep; give a grid"}
    n = len(list(itertools.product(*grid.values())))
    if n > MOST:
        return {"error": f"the grid has {n} combinations; at most {MOST} run in one sweep"}
    await w.d.progress(w.shown_as, f"grid: {grid} ({n} combinations)")
    return {"grid": grid}


async def _run(state: SweepState, runtime: Runtime[_Deps]) -> SweepState:
    w = runtime.context
    a = w.ask
    args: JsonObject = {
        "strategy": a.strategy,
        "ticker": a.ticker,
        "timeframe": a.timeframe,
        "start": a.start,
        "end": a.end,
        "params": {k: list(v) for k, v in state["grid"].items()},
        "rank_by": a.rank_by,
    }
    outcome = await w.d.run_tool(_call("run_backtest", args))
    if outcome.is_error or not isinstance(outcome.value, SweepRun):
        return {"error": outcome.as_text()}
    await w.d.progress(w.shown_as, f"ran {outcome.value.combinations} backtests")
    return {"run": outcome.value}


def _report(state: SweepState) -> SweepState:
    run = state.get("run")
    assert run is not None and run.sweep
    metric = run.rank_by
    values = [v for r in run.sweep if isinstance(v := r.figures().get(metric), int | float)]
    best = run.sweep[0]  # the agent ranks them, best first
    return {
        "report": SweepReport(
            strategy=run.strategy,
            metric=metric,
            grid=state["grid"],
            combinations=run.combinations,
            best=best.params,
            best_figures=best.figures(),
            median=statistics.median(values) if values else None,
            caveat=CAVEAT.format(n=run.combinations),
        )
    }


def _go_on(to: str) -> Any:
    return lambda state: END if state.get("error") else to


def _build() -> Any:
    g = StateGraph(SweepState, context_schema=_Deps)
    g.add_node("propose", _propose)
    g.add_node("run", _run)
    g.add_node("report", _report)
    g.add_edge(START, "propose")
    g.add_conditional_edges("propose", _go_on("run"), ["run", END])
    g.add_conditional_edges("run", _go_on("report"), ["report", END])
    g.add_edge("report", END)
    return g.compile()


_GRAPH = _build()


async def sweep(d: Delegation, ask: Ask, shown_as: str) -> SweepReport | str:
    """Run the sweep; its report, or the error that stopped it."""
    state: SweepState = await _GRAPH.ainvoke({}, context=_Deps(d, ask, shown_as))
    report = state.get("report")
    return report if report is not None else str(state.get("error") or "the sweep stopped")
