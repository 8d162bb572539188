"""The jobs a sandboxed process runs: the person's Python, validation, backtests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import talib

from agent.backtest import chart, runtime
from agent.backtest.engine import Costs


class JobError(ValueError):
    """The job could not be done; the message is for the person."""


def run(job: dict[str, Any], workspace: Path, scratch: Path) -> tuple[Any, list[str]]:
    """Do ``job``; return its value and the files it made in scratch."""
    import os

    os.environ["DEXORDER_WORKSPACE"] = str(workspace)
    kind = job.get("kind")
    try:
        if kind == "python":
            return _python(job, workspace, scratch)
        if kind == "validate":
            check = (
                runtime.validate_indicator
                if job["module"] == "indicators"
                else runtime.validate_strategy
            )
            return check(job["name"], job["code"]), []
        if kind == "backtest":
            return _backtest(job, scratch)
    except runtime.StrategyError as exc:
        raise JobError(str(exc)) from None
    raise JobError(f"unknown job kind {kind!r}")


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
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:2000]


def _python(job: dict[str, Any], workspace: Path, scratch: Path) -> tuple[Any, list[str]]:
    candle_files = {k: scratch / v for k, v in job.get("candles", {}).items()}

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
    exec(compile(job["code"], job.get("filename", "<run_python>"), "exec"), env)
    made = sorted(
        str(p.relative_to(scratch)) for p in set(scratch.rglob("*")) - before if p.is_file()
    )
    return _jsonable(env.get("result")), made


def _score(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else -math.inf


def _backtest(job: dict[str, Any], scratch: Path) -> tuple[Any, list[str]]:
    candles = pd.read_parquet(scratch / job["candles"])
    costs = Costs(**job.get("costs", {}))
    grid = runtime.sweep_grid(job.get("params", {}))
    if len(grid) > job.get("max_combinations", 200):
        raise JobError(
            f"the sweep has {len(grid)} combinations; at most {job.get('max_combinations', 200)}"
        )
    outcomes = [runtime.backtest(job["strategy"], candles, p, costs, job["bar_ms"]) for p in grid]
    if len(outcomes) > 1:
        rank = job.get("rank_by", "sharpe")
        rows = [{"params": o.params, **o.figures} for o in outcomes]
        rows.sort(key=lambda r: -_score(r.get(rank)))
        return {"sweep": rows, "rank_by": rank, "combinations": len(rows)}, []
    best = outcomes[0]
    png = chart.render(
        candles, best.run, f"{job['strategy']} on {job.get('title', '')}", scratch / "chart.png"
    )
    times = candles.index
    trades = [
        {
            "side": t.side,
            "entry_time": times[t.entry_index].isoformat(),
            "exit_time": times[t.exit_index].isoformat(),
            "entry_price": t.entry_price,
            "exit_price": t.exit_price,
            "quantity": t.quantity,
            "pnl": t.pnl,
            "return": t.ret,
            "reason": t.reason,
        }
        for t in best.run.trades
    ]
    step = max(1, len(times) // 500)  # the curve, thinned to at most ~500 points
    curve = [[times[i].isoformat(), float(best.run.equity[i])] for i in range(0, len(times), step)]
    return {
        "params": best.params,
        "mode": best.run.mode,
        "figures": best.figures,
        "trades": trades,
        "equity_curve": curve,
    }, [png.name]
