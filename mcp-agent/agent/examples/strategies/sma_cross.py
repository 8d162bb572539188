"""Long while the fast simple moving average is above the slow one; flat otherwise."""

import talib

PARAMS = {"fast": 10, "slow": 30, "size": 1.0, "stop_loss": None, "take_profit": None}


def signals(candles, fast=10, slow=30, size=1.0):
    close = candles["close"]
    fast_ma = talib.SMA(close, timeperiod=fast)
    slow_ma = talib.SMA(close, timeperiod=slow)
    return (fast_ma > slow_ma) * size
