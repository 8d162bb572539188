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


#: Trades (and aggregates) kept per symbol for ``/trades``, ``historicalTrades`` and
#: ``aggTrades``; Binance keeps all, the emulator the newest this many.
RECENT_TRADES = 10_000
#: Aggregate trade ids are their own sequence, as on Binance (where they run well below
#: the trade ids): a client that took one for the other would be caught.
AGG_ID_START = 500_000_000


@dataclass(frozen=True, slots=True)
class AggTrade:
    """Consecutive trades of one batch at one time, price and side, as one aggregate."""

    id: int
    first_id: int
    last_id: int
    time: int
    price: float
    qty: float
    buyer_is_maker: bool


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
    aggregates: dict[str, deque[AggTrade]] = field(default_factory=dict)
    next_agg_id: dict[str, int] = field(default_factory=dict)
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

    def record(self, market_id: str, trades: list[Trade]) -> None:
        """Keep a batch of trades as recent, and their aggregates: Binance aggregates
        the fills of one taker order at one price, here a batch's consecutive trades
        at one time, price and side."""
        self.recent.setdefault(market_id, deque(maxlen=RECENT_TRADES)).extend(trades)
        aggs = self.aggregates.setdefault(market_id, deque(maxlen=RECENT_TRADES))
        next_id = self.next_agg_id.get(market_id, AGG_ID_START)
        run: AggTrade | None = None
        for t in trades:
            if run is not None and (run.time, run.price, run.buyer_is_maker) == (
                t.time,
                t.price,
                t.buyer_is_maker,
            ):
                run = AggTrade(
                    run.id, run.first_id, t.id, t.time, t.price, run.qty + t.qty, t.buyer_is_maker
                )
                aggs[-1] = run
                continue
            run = AggTrade(next_id, t.id, t.id, t.time, t.price, t.qty, t.buyer_is_maker)
            next_id += 1
            aggs.append(run)
        self.next_agg_id[market_id] = next_id


def fmt_decimal(x: float) -> str:
    """A price or quantity as Binance writes it: a string with 8 decimals."""
    return f"{x:.8f}"
