"""Turning CCXT trades into :class:`Tick` messages: pure, no I/O."""

from __future__ import annotations

import time
import zlib
from typing import Any

from dexorder.market_validation import DEFAULT_MAX_SKEW_MS, tick_problem
from dexorder.schemas import Tick


class MalformedTrade(ValueError):
    """An exchange trade missing a field or carrying an impossible value."""


def tick_from_ccxt(
    exchange: str,
    trade: dict[str, Any],
    now_ms: int | None = None,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> Tick:
    """Validate one CCXT unified trade and convert it; raise :class:`MalformedTrade`.

    The exchange is outside input: besides the shape, the tick must pass the
    rules every consumer applies (:func:`dexorder.market_validation.tick_problem`,
    at wall-clock ``now_ms``, default now). A future-dated trade sent on would
    also move the ticker's :class:`TradeCursor` past every real trade after it.
    """
    try:
        trade_id, symbol = trade["id"], trade["symbol"]
        price, amount, ts = trade["price"], trade["amount"], trade["timestamp"]
    except (KeyError, TypeError):
        raise MalformedTrade(f"missing field in trade {trade!r:.200}") from None
    if not trade_id or not isinstance(symbol, str) or "/" not in symbol:
        raise MalformedTrade(f"trade without id or symbol: {trade!r:.200}")
    for name, value in (("price", price), ("amount", amount)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedTrade(f"bad {name} {value!r} in trade {trade_id}")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise MalformedTrade(f"bad timestamp {ts!r} in trade {trade_id}")
    side = trade.get("side")
    tick = Tick(
        exchange=exchange,
        symbol=symbol,
        trade_id=str(trade_id),
        price=float(price),
        amount=float(amount),
        ts=ts,
        side=side if side in ("buy", "sell") else None,
    )
    return checked(tick, now_ms, max_skew_ms, trade)


def checked(tick: Tick, now_ms: int | None, max_skew_ms: int, payload: object) -> Tick:
    """``tick`` if it passes the rules every consumer applies at wall-clock ``now_ms``
    (default now); else :class:`MalformedTrade` naming the rule and ``payload``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    problem = tick_problem(tick, now, max_skew_ms)
    if problem is not None:
        raise MalformedTrade(f"{problem} in trade {tick.trade_id}: {payload!r:.200}")
    return tick


def owns(ticker: str, shard_index: int, shard_count: int) -> bool:
    """Whether ingestor ``shard_index`` of ``shard_count`` streams ``ticker``."""
    return zlib.crc32(ticker.encode()) % shard_count == shard_index


class TradeCursor:
    """Remembers how far a ticker's trades were sent, to skip ones seen again.

    REST polling with ``since`` returns the trades at the boundary time again,
    and a gap fill overlaps the stream; the stream runner would drop the copies,
    but not sending them keeps the duplicate counters meaningful.
    """

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self._ids_at_last: set[str] = set()

    def fresh(self, ticks: list[Tick]) -> list[Tick]:
        """The ticks not sent yet, in the order given; marks them as sent."""
        out = []
        for tick in ticks:
            if self.last_ts is not None and (
                tick.ts < self.last_ts
                or (tick.ts == self.last_ts and tick.trade_id in self._ids_at_last)
            ):
                continue
            if self.last_ts is None or tick.ts > self.last_ts:
                self.last_ts, self._ids_at_last = tick.ts, set()
            self._ids_at_last.add(tick.trade_id)
            out.append(tick)
        return out
