"""Market identifiers: tickers like ``BINANCE:BTC/USDT`` and candle timeframes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_TICKER_RE = re.compile(r"^([A-Z0-9_]{2,32}):([A-Z0-9]{1,20})/([A-Z0-9]{1,20})$")


class InvalidTicker(ValueError):
    """A ticker string that is not ``EXCHANGE:BASE/QUOTE``."""


class InvalidTimeframe(ValueError):
    """A timeframe other than the supported ones (1m 5m 15m 1h 4h 1d)."""


@dataclass(frozen=True, slots=True)
class Ticker:
    """One market on one exchange, e.g. ``BINANCE:BTC/USDT``."""

    exchange: str
    base: str
    quote: str

    @classmethod
    def parse(cls, text: str) -> Ticker:
        """Parse ``EXCHANGE:BASE/QUOTE`` (case-insensitive); raise :class:`InvalidTicker`."""
        m = _TICKER_RE.match(text.strip().upper())
        if m is None:
            raise InvalidTicker(
                f"invalid ticker {text!r}: expected EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT"
            )
        return cls(m.group(1), m.group(2), m.group(3))

    @property
    def symbol(self) -> str:
        """The CCXT unified symbol, ``BASE/QUOTE``."""
        return f"{self.base}/{self.quote}"

    def __str__(self) -> str:
        return f"{self.exchange}:{self.base}/{self.quote}"


class Timeframe(StrEnum):
    """Candle timeframes the platform keeps; the value is the CCXT/Binance spelling."""

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse ``1m 5m 15m 1h 4h 1d``; raise :class:`InvalidTimeframe`."""
        try:
            return cls(text.strip())
        except ValueError:
            allowed = " ".join(t.value for t in cls)
            raise InvalidTimeframe(
                f"invalid timeframe {text!r}: expected one of {allowed}"
            ) from None

    @property
    def ms(self) -> int:
        """Length of one candle in milliseconds."""
        return _TF_MS[self.value]

    def floor(self, ts_ms: int) -> int:
        """Open time (ms) of the candle of this timeframe that contains ``ts_ms``."""
        return ts_ms - ts_ms % self.ms


_TF_MS = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}

ALL_TIMEFRAMES: tuple[Timeframe, ...] = tuple(Timeframe)
