"""A PNG of a backtest: price with the trades on it, and the equity curve below."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from agent.backtest.engine import BacktestRun


def render(candles: pd.DataFrame, run: BacktestRun, title: str, out: Path) -> Path:
    """Write the chart to ``out`` (PNG) and return it."""
    fig, (price_ax, equity_ax) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    times = candles.index
    price_ax.plot(times, candles["close"].to_numpy(), color="#4a5568", linewidth=0.9, label="close")
    for t in run.trades:
        long = t.quantity > 0
        price_ax.scatter(
            times[t.entry_index],
            t.entry_price,
            marker="^" if long else "v",
            color="#2f855a" if long else "#c53030",
            s=36,
            zorder=3,
        )
        price_ax.scatter(
            times[t.exit_index], t.exit_price, marker="x", color="#1a202c", s=28, zorder=3
        )
    price_ax.set_title(title)
    price_ax.set_ylabel("price")
    price_ax.grid(alpha=0.3)
    equity_ax.plot(times, run.equity, color="#2b6cb0", linewidth=1.1)
    equity_ax.set_ylabel("equity")
    equity_ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
