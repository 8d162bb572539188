"""What writing code starts from: the SDK's documented interfaces (for the model), and the
offline model's drafts (a few well-known rules picked by the words of the request)."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

#: What the SDK's docstring says, when the agent's package is not installed with the gateway.
_SDK_SHORT = """\
Indicator (indicators/<name>.py): `PARAMS = {...}`; `def compute(candles, **params)` returns
one value per candle. Strategy (strategies/<name>.py): `PARAMS = {...}`;
`def signals(candles, **params)` returns, per candle, the fraction of equity to hold
(1 long, 0 flat, -1 short). `candles` is a pandas DataFrame (open high low close volume);
every TA-Lib function is `talib.<NAME>`; `from agent.sdk import indicator` runs an indicator.
"""


@cache
def sdk_doc() -> str:
    """The SDK's documented interfaces (``agent/sdk.py``'s docstring), read without importing
    it (it pulls pandas into the gateway)."""
    try:
        spec = importlib.util.find_spec("agent.sdk")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return _SDK_SHORT
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or _SDK_SHORT


_STRATEGIES = {
    "rsi": '''"""Long when RSI dips under {low}, flat once it recovers over {high}."""
import talib

PARAMS = {{"period": 14, "low": {low}, "high": {high}, "size": 1.0, "stop_loss": 0.03}}


def signals(candles, period=14, low={low}, high={high}, size=1.0, **_):
    rsi = talib.RSI(candles["close"], timeperiod=period)
    # in below ``low``, out above ``high``, unchanged between
    state = (rsi < low).astype(float).where((rsi < low) | (rsi > high))
    return state.ffill().fillna(0.0) * size
''',
    "bollinger": '''"""Long on a close over the upper Bollinger band, flat under the middle one."""
import talib

PARAMS = {"period": 20, "width": 2.0, "size": 1.0, "stop_loss": 0.03}


def signals(candles, period=20, width=2.0, size=1.0, **_):
    upper, middle, _lower = talib.BBANDS(
        candles["close"], timeperiod=period, nbdevup=width, nbdevdn=width
    )
    close = candles["close"]
    state = (close > upper).astype(float).where((close > upper) | (close < middle))
    return state.ffill().fillna(0.0) * size
''',
    "ema": '''"""Long while the fast EMA is above the slow one."""
import talib

PARAMS = {"fast": 12, "slow": 26, "size": 1.0, "stop_loss": None, "take_profit": None}


def signals(candles, fast=12, slow=26, size=1.0, **_):
    fast_ma = talib.EMA(candles["close"], timeperiod=fast)
    slow_ma = talib.EMA(candles["close"], timeperiod=slow)
    return (fast_ma > slow_ma) * size
''',
    "sma": '''"""Long while the fast SMA is above the slow one."""
import talib

PARAMS = {"fast": 10, "slow": 30, "size": 1.0, "stop_loss": None, "take_profit": None}


def signals(candles, fast=10, slow=30, size=1.0, **_):
    fast_ma = talib.SMA(candles["close"], timeperiod=fast)
    slow_ma = talib.SMA(candles["close"], timeperiod=slow)
    return (fast_ma > slow_ma) * size
''',
}

_INDICATORS = {
    "rsi": ("Relative strength index.", "RSI", "close", 14),
    "ema": ("Exponential moving average.", "EMA", "close", 20),
    "sma": ("Simple moving average.", "SMA", "close", 20),
    "atr": ("Average true range.", "ATR", "hlc", 14),
}


def _which(request: str, known: list[str], default: str) -> str:
    lowered = request.lower()
    for key in known:
        if re.search(rf"\b{key}", lowered):
            return key
    if "band" in lowered or "breakout" in lowered:
        return "bollinger" if "bollinger" in known else default
    return default


def draft(kind: str, request: str) -> str:
    """A file for ``request`` written from a known rule (the offline model's draft)."""
    if kind == "strategy":
        key = _which(request, list(_STRATEGIES), "sma")
        if key == "rsi":
            low = re.search(r"\b(?:under|below|<)\s*(\d{1,2})\b", request)
            high = re.search(r"\b(?:over|above|>)\s*(\d{1,2})\b", request)
            return _STRATEGIES["rsi"].format(
                low=low.group(1) if low else 30, high=high.group(1) if high else 55
            )
        return _STRATEGIES[key]
    doc, fn, inputs, period = _INDICATORS[_which(request, list(_INDICATORS), "sma")]
    args = (
        'candles["high"], candles["low"], candles["close"]'
        if inputs == "hlc"
        else 'candles["close"]'
    )
    return (
        f'"""{doc}"""\nimport talib\n\nPARAMS = {{"period": {period}}}\n\n\n'
        f"def compute(candles, period={period}):\n"
        f"    return talib.{fn}({args}, timeperiod=period)\n"
    )
