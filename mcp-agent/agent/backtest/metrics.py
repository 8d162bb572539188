"""Performance figures of a backtest run. Pure numpy.

Returns are per bar; Sharpe and Sortino are annualised with the number of
bars in a year of the timeframe (crypto trades every day), with a zero risk-free
rate. CAGR uses the calendar time the candles span.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from agent.backtest.engine import F64, BacktestRun

YEAR_MS = 365 * 86_400_000


@dataclass(frozen=True)
class Report:
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    max_drawdown: float
    win_rate: float
    profit_factor: float
    exposure: float
    trades: int
    fees: float
    final_equity: float

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: infinities and NaN (no losing trade, no variance) become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def _finite(x: float) -> float:
    return x if math.isfinite(x) else float("nan")


def report(run: BacktestRun, initial_cash: float, bar_ms: int, span_ms: int) -> Report:
    """The figures of ``run``; ``span_ms`` is the time from the first open to the last close."""
    equity = run.equity
    start = np.concatenate(([initial_cash], equity[:-1]))
    returns: F64 = np.divide(equity - start, start, out=np.zeros_like(equity), where=start != 0)
    total = equity[-1] / initial_cash - 1
    years = span_ms / YEAR_MS
    cagr = (equity[-1] / initial_cash) ** (1 / years) - 1 if years > 0 and equity[-1] > 0 else -1.0
    per_year = YEAR_MS / bar_ms
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    mean = float(returns.mean())
    downside = returns[returns < 0]
    down_std = float(np.sqrt(np.mean(downside**2))) if len(downside) else 0.0
    sharpe = mean / std * math.sqrt(per_year) if std > 0 else 0.0
    sortino = mean / down_std * math.sqrt(per_year) if down_std > 0 else 0.0
    peak = np.maximum.accumulate(np.concatenate(([initial_cash], equity)))
    drawdown = float(np.max(1 - np.concatenate(([initial_cash], equity)) / peak))
    pnls = np.array([t.pnl for t in run.trades], dtype=np.float64)
    wins = pnls[pnls > 0]
    losses = pnls[pnls < 0]
    win_rate = len(wins) / len(pnls) if len(pnls) else 0.0
    gross_loss = -float(losses.sum())
    profit_factor = float(wins.sum()) / gross_loss if gross_loss > 0 else float("inf")
    exposure = float(np.count_nonzero(run.units)) / len(run.units) if len(run.units) else 0.0
    return Report(
        total_return=float(total),
        cagr=float(cagr),
        sharpe=_finite(sharpe),
        sortino=_finite(sortino),
        max_drawdown=drawdown,
        win_rate=win_rate,
        profit_factor=profit_factor if len(wins) or len(losses) else 0.0,
        exposure=exposure,
        trades=len(run.trades),
        fees=float(run.fees),
        final_equity=float(equity[-1]),
    )
