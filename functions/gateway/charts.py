"""Candle charts as PNG, for channels that cannot draw them (Telegram)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from dexorder.contracts.chat import CandleRow


def candles_png(rows: Sequence[CandleRow], title: str) -> bytes:
    """A candlestick chart of ``rows`` ([open_time_ms, open, high, low, close], oldest first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        for i, (_, o, h, low, c) in enumerate(rows):
            color: Any = "#26a69a" if c >= o else "#ef5350"
            ax.vlines(i, low, h, color=color, linewidth=0.8)
            ax.vlines(i, min(o, c), max(o, c), color=color, linewidth=3)
        ax.set_title(title)
        ax.set_xticks([])
        ax.grid(alpha=0.2)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
