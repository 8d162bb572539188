"""Buy when RSI is oversold, sell when it recovers; a 3% stop-loss guards each entry."""

import talib

PARAMS = {"period": 14, "oversold": 30, "exit_at": 55, "size": 0.5, "stop_loss": 0.03}


class Strategy:
    """Bar by bar: the position depends on whether we are already in."""

    def __init__(self, period=14, oversold=30, exit_at=55, size=0.5):
        self.period, self.oversold, self.exit_at, self.size = period, oversold, exit_at, size
        self.rsi = None
        self.long = False

    def on_bar(self, i, candles):
        if self.rsi is None:
            self.rsi = talib.RSI(candles["close"].to_numpy(), timeperiod=self.period)
        value = self.rsi[i]
        if value != value:  # not enough candles yet (NaN)
            return None
        if not self.long and value < self.oversold:
            self.long = True
            return self.size
        if self.long and value > self.exit_at:
            self.long = False
            return 0.0
        return None
