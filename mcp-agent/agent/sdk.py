"""What the person's indicators and strategies are written against.

**Indicator** (``indicators/<name>.py``)::

    \"\"\"Relative strength index.\"\"\"
    import talib

    PARAMS = {"period": 14}          # defaults, optional

    def compute(candles, period=14):
        return talib.RSI(candles["close"], timeperiod=period)

``candles`` is a pandas DataFrame indexed by open time (UTC) with columns
``open high low close volume``; ``compute`` returns one value per candle (a
Series, a DataFrame of several lines, or an array). Every TA-Lib function is
at hand as ``talib.<NAME>``.

**Strategy** (``strategies/<name>.py``), vectorised::

    \"\"\"Long while the fast SMA is above the slow one.\"\"\"
    import talib
    from agent.sdk import indicator

    PARAMS = {"fast": 10, "slow": 30, "size": 1.0, "stop_loss": None, "take_profit": None}

    def signals(candles, fast=10, slow=30, size=1.0, **_):
        fast_ma = talib.SMA(candles["close"], timeperiod=fast)
        slow_ma = talib.SMA(candles["close"], timeperiod=slow)
        return (fast_ma > slow_ma) * size

``signals`` returns, per candle, the fraction of equity to hold after that
candle closes (1 long, 0 flat, -1 short, 0.5 half): that is the entry and exit
rules and the position sizing in one. The engine trades at the next candle's
open. ``stop_loss`` / ``take_profit`` in ``PARAMS`` (fractions of the entry
price, e.g. 0.02) add protective exits.

Or bar by bar, for rules that need their own state::

    class Strategy:
        def __init__(self, **params): ...
        def on_bar(self, i, candles) -> float | None:   # target, or None: unchanged
            ...

``indicator(name, candles, **params)`` runs one of the person's indicators.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

WORKSPACE_ENV = "DEXORDER_WORKSPACE"


def load_module(
    kind: str, name: str, source: str | None = None, root: Path | None = None
) -> ModuleType:
    """Load ``kind/name.py`` from the workspace (or from ``source``) as a fresh module."""
    root = root or Path(os.environ.get(WORKSPACE_ENV, "."))
    path = root / kind / f"{name}.py"
    text = source if source is not None else path.read_text()
    module = ModuleType(f"workspace.{kind}.{name}")
    module.__file__ = f"{kind}/{name}.py"
    code = compile(text, module.__file__, "exec")
    sys.modules[module.__name__] = module
    exec(code, module.__dict__)
    return module


def indicator(name: str, candles: pd.DataFrame, **params: Any) -> Any:
    """The values of the person's indicator ``name`` over ``candles``."""
    module = load_module("indicators", name)
    merged = {**getattr(module, "PARAMS", {}), **params}
    return module.compute(candles, **merged)


def sample_candles(n: int = 400, seed: int = 7) -> pd.DataFrame:
    """Deterministic candles for validation: a random walk with some volatility."""
    rnd = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rnd.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    spread = np.abs(rnd.normal(0, 0.005, n)) * close
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rnd.uniform(1, 10, n),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC", name="open_time"),
    )
    return frame
