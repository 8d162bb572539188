"""Person's code meets the engine: validate indicators and strategies, run backtests and sweeps.

Runs inside the sandbox (the code is the person's); errors carry the line of
their file that failed.
"""

from __future__ import annotations

import itertools
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from agent.backtest.engine import BacktestRun, Costs, Exits, run
from agent.backtest.metrics import report
from agent.sdk import load_module, sample_candles
from agent.workspace import SINGULAR

EXIT_KEYS = ("stop_loss", "take_profit")


class StrategyError(ValueError):
    """The person's indicator or strategy is not usable; the message says why and where."""


def where(exc: BaseException, filename: str) -> str:
    """``line N: Type: message`` for the innermost frame of ``filename``."""
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        return f"line {exc.lineno}: SyntaxError: {exc.msg}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return f"{f'line {line}: ' if line else ''}{type(exc).__name__}: {exc}"


def _load(kind: str, name: str, source: str | None = None) -> ModuleType:
    filename = f"{kind}/{name}.py"
    try:
        return load_module(kind, name, source)
    except FileNotFoundError:
        raise StrategyError(f"no {SINGULAR[kind]} named {name!r} in the workspace") from None
    except BaseException as exc:
        raise StrategyError(f"{filename} does not import: {where(exc, filename)}") from None


def _as_values(out: Any, n: int, what: str) -> np.ndarray:
    if isinstance(out, pd.DataFrame | pd.Series):
        values = out.to_numpy(dtype=np.float64)
    else:
        try:
            values = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise StrategyError(
                f"{what} returned {type(out).__name__}; expected numbers, one per candle"
            ) from None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or len(values) != n:
        got = "a single value" if values.ndim == 0 else f"{len(values)} values"
        raise StrategyError(f"{what} returned {got} for {n} candles; expected one per candle")
    return values


def validate_indicator(name: str, source: str) -> tuple[int, int, str]:
    """Import the indicator and run it on sample candles: its lines, the candles, its doc."""
    module = _load("indicators", name, source)
    if not callable(getattr(module, "compute", None)):
        raise StrategyError("an indicator must define compute(candles, **params)")
    candles = sample_candles()
    filename = f"indicators/{name}.py"
    try:
        out = module.compute(candles, **getattr(module, "PARAMS", {}))
    except BaseException as exc:
        raise StrategyError(f"compute failed on sample candles: {where(exc, filename)}") from None
    values = _as_values(out, len(candles), "compute")
    lines = 1 if values.ndim == 1 else values.shape[1]
    return lines, len(candles), _doc(module)


def compute_indicator(
    name: str, candles: pd.DataFrame, params: dict[str, Any]
) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
    """Indicator ``name``'s lines over ``candles`` (each a value per candle) and the
    parameters it ran with; its own failure as a :class:`StrategyError` naming its line."""
    module = _load("indicators", name)
    if not callable(getattr(module, "compute", None)):
        raise StrategyError("an indicator must define compute(candles, **params)")
    known = getattr(module, "PARAMS", {})
    unknown = set(params) - set(known)
    if unknown:
        raise StrategyError(f"unknown parameter(s) {sorted(unknown)}; {name} takes {sorted(known)}")
    merged = {**known, **params}
    try:
        out = module.compute(candles, **merged)
    except BaseException as exc:
        raise StrategyError(where(exc, f"indicators/{name}.py")) from None
    values = _as_values(out, len(candles), "compute")
    if values.ndim == 1:
        label = str(out.name) if isinstance(out, pd.Series) and out.name is not None else name
        return [(label, values)], merged
    if isinstance(out, pd.DataFrame):
        labels = [str(c) for c in out.columns]
    else:
        labels = [f"{name}_{i}" for i in range(values.shape[1])]
    return [(label, values[:, i]) for i, label in enumerate(labels)], merged


def _params(module: ModuleType, given: dict[str, Any]) -> dict[str, Any]:
    params = {**getattr(module, "PARAMS", {}), **given}
    unknown = set(given) - set(getattr(module, "PARAMS", {})) - set(EXIT_KEYS)
    if unknown and hasattr(module, "PARAMS"):
        raise StrategyError(
            f"unknown parameter(s) {sorted(unknown)}; the strategy takes "
            f"{sorted(getattr(module, 'PARAMS', {}))}"
        )
    return params


def targets(
    module: ModuleType, name: str, candles: pd.DataFrame, params: dict[str, Any]
) -> np.ndarray:
    """The fraction of equity the strategy wants after each candle."""
    filename = f"strategies/{name}.py"
    rule_params = {k: v for k, v in params.items() if k not in EXIT_KEYS}
    try:
        if callable(getattr(module, "signals", None)):
            out = module.signals(candles, **rule_params)
            values: np.ndarray = np.nan_to_num(_as_values(out, len(candles), "signals"), nan=0.0)
            return values
        if isinstance(getattr(module, "Strategy", None), type):
            strategy = module.Strategy(**rule_params)
            wanted = np.zeros(len(candles))
            current = 0.0
            for i in range(len(candles)):
                t = strategy.on_bar(i, candles)
                if t is not None:
                    current = float(t)
                wanted[i] = current
            return wanted
    except StrategyError:
        raise
    except BaseException as exc:
        raise StrategyError(f"the strategy failed: {where(exc, filename)}") from None
    raise StrategyError("a strategy must define signals(candles, **params) or class Strategy")


def _doc(module: ModuleType) -> str:
    doc = module.__doc__
    return doc.strip()[:2000] if isinstance(doc, str) else ""


def validate_strategy(name: str, source: str) -> tuple[int, str]:
    """Import the strategy and backtest it on sample candles: the candles, its doc."""
    module = _load("strategies", name, source)
    candles = sample_candles()
    wanted = targets(module, name, candles, _params(module, {}))
    if np.any(np.abs(wanted) > 10):
        raise StrategyError("signals must be fractions of equity (e.g. 1, 0.5, 0, -1), not prices")
    return len(candles), _doc(module)


@dataclass
class Outcome:
    params: dict[str, Any]
    run: BacktestRun
    figures: dict[str, Any]


def backtest(
    name: str, candles: pd.DataFrame, params: dict[str, Any], costs: Costs, bar_ms: int
) -> Outcome:
    """One backtest of strategy ``name`` with ``params`` over ``candles``."""
    module = _load("strategies", name)
    merged = _params(module, params)
    wanted = targets(module, name, candles, merged)
    exits = Exits(merged.get("stop_loss"), merged.get("take_profit"))
    result = run(
        candles["open"].to_numpy(np.float64),
        candles["high"].to_numpy(np.float64),
        candles["low"].to_numpy(np.float64),
        candles["close"].to_numpy(np.float64),
        wanted,
        costs,
        exits,
    )
    if not hasattr(module, "signals"):
        result.mode = "bar-by-bar"
    times = candles.index.asi8 // 1_000_000
    span = int(times[-1] - times[0]) + bar_ms if len(times) else 0
    figures = report(result, costs.initial_cash, bar_ms, span).as_dict()
    return Outcome(merged, result, figures)


def sweep_grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the list-valued parameters (the others stay fixed)."""
    varying = {k: v for k, v in params.items() if isinstance(v, list)}
    fixed = {k: v for k, v in params.items() if not isinstance(v, list)}
    if not varying:
        return [fixed]
    keys = sorted(varying)
    return [
        {**fixed, **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(varying[k] for k in keys))
    ]
