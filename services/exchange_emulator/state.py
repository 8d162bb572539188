"""The emulator's live state, shared by its APIs: the simulated market, open
WebSocket connections, recent trades, the request weight used, counters."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from services.exchange_emulator.account import Accounts
from services.exchange_emulator.simulator import MarketSimulator, Trade

if TYPE_CHECKING:
    from dexorder.config import EmulatorConfig


@dataclass
class Connection:
    """One WebSocket client and the streams it subscribed to."""

    ws: web.WebSocketResponse
    #: ``/stream`` connections get ``{"stream", "data"}`` envelopes
    combined: bool
    streams: set[str] = field(default_factory=set)


@dataclass
class EmulatorCounts:
    """What ``/emulator/stats`` reports besides the connections."""

    trades_sent: int = 0
    rest_requests: int = 0


@dataclass
class EmulatorState:
    """Live state: connections, recent trades, weight used, counters."""

    sim: MarketSimulator
    weight_limit: int
    clock: Callable[[], float] = time.time
    conns: list[Connection] = field(default_factory=list)
    recent: dict[str, deque[Trade]] = field(default_factory=dict)
    weight_window: int = 0
    weight_used: int = 0
    down: bool = False
    injected_seq: int = 0
    counts: EmulatorCounts = field(default_factory=EmulatorCounts)
    accounts: Accounts = field(default_factory=Accounts)

    @classmethod
    def from_section(cls, em: EmulatorConfig) -> EmulatorState:
        """A fresh market as the ``emulator`` section sets it (seed, trade rate, weight)."""
        return cls(
            MarketSimulator(seed=em.seed, trade_rate=em.trade_rate),
            weight_limit=em.weight_limit_per_minute,
        )

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def fmt_decimal(x: float) -> str:
    """A price or quantity as Binance writes it: a string with 8 decimals."""
    return f"{x:.8f}"
