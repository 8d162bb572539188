"""Relative strength index of the close."""

import talib

PARAMS = {"period": 14}


def compute(candles, period=14):
    return talib.RSI(candles["close"], timeperiod=period)
