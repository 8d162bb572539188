"""The backtest engine: target positions over candles → fills, equity, trades. Pure numpy.

A strategy says, at the close of each bar, what fraction of equity it wants
to hold (1 long with all of it, 0.5 half, 0 flat, -1 short). The engine trades
at the *next* bar's open (no look-ahead), paying ``fee_rate`` of the notional
and ``slippage`` against it on every fill, and holds the units until the target
changes. Stop-loss and take-profit exits (fractions of the entry price) are
path dependent, so a strategy that sets them runs bar by bar; otherwise the
engine works per position change, vectorised between changes.

The same inputs give bit-identical results: only deterministic numpy
arithmetic, in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Costs:
    """What trading costs: fee and slippage as fractions of the price (0.001 = 0.1%)."""

    fee_rate: float = 0.001
    slippage: float = 0.0005
    initial_cash: float = 10_000.0


@dataclass(frozen=True)
class Exits:
    """Protective exits as fractions of the entry price; None: none."""

    stop_loss: float | None = None
    take_profit: float | None = None

    @property
    def any(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None


@dataclass
class Trade:
    """One round trip (or the open position at the end, ``exit_index`` = last bar)."""

    side: str
    entry_index: int
    exit_index: int
    entry_price: float
    exit_price: float
    quantity: float
    pnl: float
    fees: float
    reason: str = "signal"

    @property
    def ret(self) -> float:
        cost = self.entry_price * abs(self.quantity)
        return self.pnl / cost if cost else 0.0


@dataclass
class BacktestRun:
    """Equity at every bar's close, units held, and the trades."""

    equity: F64
    units: F64
    trades: list[Trade] = field(default_factory=list)
    fees: float = 0.0
    mode: str = "vectorised"


def _fill_price(price: float, buying: bool, slippage: float) -> float:
    return price * (1 + slippage) if buying else price * (1 - slippage)


def run(
    open_: F64,
    high: F64,
    low: F64,
    close: F64,
    target: F64,
    costs: Costs = Costs(),
    exits: Exits = Exits(),
) -> BacktestRun:
    """Backtest ``target`` (fraction of equity wanted after each bar's close)."""
    n = len(close)
    if not (len(open_) == len(high) == len(low) == n == len(target)):
        raise ValueError("candles and targets must have the same length")
    target = np.nan_to_num(np.asarray(target, dtype=np.float64), nan=0.0)
    if exits.any:
        return _bar_by_bar(open_, high, low, close, target, costs, exits)
    return _vectorised(open_, close, target, costs)


def _vectorised(open_: F64, close: F64, target: F64, costs: Costs) -> BacktestRun:
    n = len(close)
    # the target decided at bar i's close is traded at bar i+1's open
    wanted = np.empty(n)
    wanted[0] = 0.0
    wanted[1:] = target[:-1]
    changes = np.flatnonzero(np.diff(wanted, prepend=0.0) != 0.0)
    units_at = np.zeros(len(changes) + 1)
    cash_at = np.empty(len(changes) + 1)
    cash, units, fees = costs.initial_cash, 0.0, 0.0
    cash_at[0] = cash
    trades: list[Trade] = []
    open_trade: Trade | None = None
    for k, i in enumerate(changes.tolist()):
        price = float(open_[i])
        new_units = _units_for(float(wanted[i]), cash, units, price, costs.slippage)
        cash, units, fee, open_trade = _trade(
            cash, units, new_units, price, i, costs, trades, open_trade, "signal"
        )
        fees += fee
        units_at[k + 1] = units
        cash_at[k + 1] = cash
    segment = np.searchsorted(changes, np.arange(n), side="right")
    held = units_at[segment]
    equity_curve = cash_at[segment] + held * close
    if open_trade is not None:
        _close_at_end(open_trade, float(close[-1]), n - 1, trades)
    return BacktestRun(equity_curve, held, trades, fees, "vectorised")


def _units_for(fraction: float, cash: float, units: float, price: float, slippage: float) -> float:
    """Units putting ``fraction`` of equity (marked at ``price``) into the position at the fill."""
    if price <= 0:
        return 0.0
    equity = cash + units * price
    wanted = fraction * equity / price
    return fraction * equity / _fill_price(price, wanted > units, slippage)


def _trade(
    cash: float,
    units: float,
    new_units: float,
    price: float,
    i: int,
    costs: Costs,
    trades: list[Trade],
    open_trade: Trade | None,
    reason: str,
) -> tuple[float, float, float, Trade | None]:
    """Move from ``units`` to ``new_units`` at ``price``; book round trips."""
    delta = new_units - units
    if delta == 0.0:
        return cash, units, 0.0, open_trade
    fill = _fill_price(price, delta > 0, costs.slippage)
    fee = abs(delta) * fill * costs.fee_rate
    cash -= delta * fill + fee
    if open_trade is not None and (new_units == 0.0 or np.sign(new_units) != np.sign(units)):
        open_trade.exit_index = i
        open_trade.exit_price = fill
        open_trade.fees += abs(units) * fill * costs.fee_rate
        open_trade.pnl = units * (fill - open_trade.entry_price) - open_trade.fees
        open_trade.reason = reason
        trades.append(open_trade)
        open_trade = None
    if new_units != 0.0 and open_trade is None:
        open_trade = Trade(
            side="long" if new_units > 0 else "short",
            entry_index=i,
            exit_index=i,
            entry_price=fill,
            exit_price=fill,
            quantity=new_units,
            pnl=0.0,
            fees=abs(new_units) * fill * costs.fee_rate,
        )
    elif open_trade is not None:  # resized in the same direction: average the entry
        added = new_units - open_trade.quantity
        if abs(new_units) > abs(open_trade.quantity):
            open_trade.entry_price = (
                open_trade.entry_price * open_trade.quantity + fill * added
            ) / new_units
        open_trade.fees += abs(added) * fill * costs.fee_rate
        open_trade.quantity = new_units
    return cash, new_units, fee, open_trade


def _close_at_end(t: Trade, price: float, i: int, trades: list[Trade]) -> None:
    t.exit_index, t.exit_price, t.reason = i, price, "open at end"
    t.pnl = t.quantity * (price - t.entry_price) - t.fees
    trades.append(t)


def _bar_by_bar(
    open_: F64, high: F64, low: F64, close: F64, target: F64, costs: Costs, exits: Exits
) -> BacktestRun:
    n = len(close)
    equity_curve = np.empty(n)
    held = np.empty(n)
    cash, units, fees = costs.initial_cash, 0.0, 0.0
    trades: list[Trade] = []
    open_trade: Trade | None = None
    following = 0.0  # the target the book follows; after an exit, flat until it changes
    for i in range(n):
        if i > 0 and float(target[i - 1]) != following:
            following = float(target[i - 1])
            price = float(open_[i])
            new_units = _units_for(following, cash, units, price, costs.slippage)
            cash, units, fee, open_trade = _trade(
                cash, units, new_units, price, i, costs, trades, open_trade, "signal"
            )
            fees += fee
        if open_trade is not None:
            exit_price, reason = _protective_exit(open_trade, float(high[i]), float(low[i]), exits)
            if exit_price is not None:
                cash, units, fee, open_trade = _trade(
                    cash, units, 0.0, exit_price, i, costs, trades, open_trade, reason
                )
                fees += fee
        equity_curve[i] = cash + units * float(close[i])
        held[i] = units
    if open_trade is not None:
        _close_at_end(open_trade, float(close[-1]), n - 1, trades)
    return BacktestRun(equity_curve, held, trades, fees, "bar-by-bar")


def _protective_exit(t: Trade, high: float, low: float, exits: Exits) -> tuple[float | None, str]:
    """The price a stop-loss or take-profit fills at within this bar, if either is hit.

    When both could have been hit in one bar, the stop is assumed first (the
    cautious reading of a bar whose path is unknown).
    """
    long = t.quantity > 0
    if exits.stop_loss is not None:
        stop = t.entry_price * (1 - exits.stop_loss if long else 1 + exits.stop_loss)
        if (long and low <= stop) or (not long and high >= stop):
            return stop, "stop-loss"
    if exits.take_profit is not None:
        take = t.entry_price * (1 + exits.take_profit if long else 1 - exits.take_profit)
        if (long and high >= take) or (not long and low <= take):
            return take, "take-profit"
    return None, ""
