"""The jobs a sandboxed process runs: the person's Python, validation, backtests."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import talib

from agent.backtest import chart, runtime
from agent.backtest.engine import Costs
from agent.sandbox.protocol import (
    BacktestJob,
    BacktestOutcome,
    IndicatorJob,
    IndicatorLineOut,
    IndicatorOutcome,
    Job,
    Outcome,
    ParamValue,
    PythonJob,
    PythonOutcome,
    SweepOutcome,
    SweepRow,
    TradeRow,
    ValidateJob,
    ValidationOutcome,
)
from agent.sdk import WORKSPACE_ENV


class JobError(ValueError):
    """The job could not be done; the message is for the person."""


#: Told how far a job got: done of total (a sweep's combinations).
Progress = Callable[[int, int], None]


def _quiet(done: int, total: int) -> None:
    pass


def run(
    job: Job, workspace: Path, inputs: Path, scratch: Path, progress: Progress = _quiet
) -> Outcome:
    """Do ``job``; the outcome goes back to the agent over the reply pipe."""
    os.environ[WORKSPACE_ENV] = str(workspace)
    try:
        if isinstance(job, PythonJob):
            return _python(job, workspace, inputs, scratch)
        if isinstance(job, ValidateJob):
            return _validate(job)
        if isinstance(job, IndicatorJob):
            return _indicator(job, inputs)
        return _backtest(job, inputs, scratch, progress)
    except runtime.StrategyError as exc:
        raise JobError(str(exc)) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return json.loads(value.head(1000).to_json(orient="records", date_format="iso"))
    if isinstance(value, pd.Series):
        return json.loads(value.head(1000).to_json(date_format="iso"))
    if isinstance(value, np.ndarray):
        return value[:10000].tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)[:2000]


def _python(job: PythonJob, workspace: Path, inputs: Path, scratch: Path) -> PythonOutcome:
    candle_files = {k: inputs / v for k, v in job.candles.items()}

    def candles(ticker: str, timeframe: str = "1h") -> pd.DataFrame:
        key = f"{ticker}|{timeframe}"
        if key not in candle_files:
            have = ", ".join(sorted(candle_files)) or "none"
            raise LookupError(f"no candles loaded for {key} (loaded: {have})")
        return pd.read_parquet(candle_files[key])

    env: dict[str, Any] = {
        "__name__": "__main__",
        "np": np,
        "pd": pd,
        "talib": talib,
        "candles": candles,
        "workspace": workspace,
        "scratch": scratch,
    }
    before = set(scratch.rglob("*"))
    exec(compile(job.code, job.filename, "exec"), env)
    made = sorted(
        str(p.relative_to(scratch)) for p in set(scratch.rglob("*")) - before if p.is_file()
    )
    return PythonOutcome(json.dumps(_jsonable(env.get("result"))), made)


def _validate(job: ValidateJob) -> ValidationOutcome:
    if job.module == "indicators":
        lines, n, doc = runtime.validate_indicator(job.name, job.code)
        return ValidationOutcome(n, doc, lines)
    n, doc = runtime.validate_strategy(job.name, job.code)
    return ValidationOutcome(n, doc)


def _indicator(job: IndicatorJob, inputs: Path) -> IndicatorOutcome:
    candles = pd.read_parquet(inputs / job.candles)
    lines, params = runtime.compute_indicator(job.name, candles, dict(job.params))
    return IndicatorOutcome(
        lines=[
            # NaN (a line's warm-up, a gap) has no JSON: None, which the page leaves out
            IndicatorLineOut(label, [float(v) if math.isfinite(v) else None for v in values])
            for label, values in lines
        ],
        params=_params(params),
    )


def _score(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else -math.inf


def _params(params: dict[str, Any]) -> dict[str, ParamValue]:
    return {k: _jsonable(v) for k, v in params.items()}


def _backtest(
    job: BacktestJob, inputs: Path, scratch: Path, progress: Progress
) -> BacktestOutcome | SweepOutcome:
    candles = pd.read_parquet(inputs / job.candles)
    c = job.costs
    costs = Costs(fee_rate=c.fee_rate, slippage=c.slippage, initial_cash=c.initial_cash)
    grid = runtime.sweep_grid(dict(job.params))
    if len(grid) > job.max_combinations:
        raise JobError(f"the sweep has {len(grid)} combinations; at most {job.max_combinations}")
    outcomes = []
    for i, p in enumerate(grid):
        outcomes.append(runtime.backtest(job.strategy, candles, p, costs, job.bar_ms))
        progress(i + 1, len(grid))
    if len(outcomes) > 1:
        rows = [SweepRow(_params(o.params), o.figures) for o in outcomes]
        rows.sort(key=lambda r: -_score(r.figures.get(job.rank_by)))
        return SweepOutcome(rows, job.rank_by)
    best = outcomes[0]
    png = chart.render(candles, best.run, f"{job.strategy} on {job.title}", scratch / "chart.png")
    times = candles.index
    trades = [
        TradeRow(
            side=t.side,
            entry_time=times[t.entry_index].isoformat(),
            exit_time=times[t.exit_index].isoformat(),
            entry_price=t.entry_price,
            exit_price=t.exit_price,
            quantity=t.quantity,
            pnl=t.pnl,
            ret=t.ret,
            reason=t.reason,
        )
        for t in best.run.trades
    ]
    step = max(1, len(times) // 500)  # the curve, thinned to at most ~500 points
    curve = [(times[i].isoformat(), float(best.run.equity[i])) for i in range(0, len(times), step)]
    return BacktestOutcome(
        params=_params(best.params),
        mode=best.run.mode,
        figures=best.figures,
        trades=trades,
        equity_curve=curve,
        chart_png=png.read_bytes(),
    )
