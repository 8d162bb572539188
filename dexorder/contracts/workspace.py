"""The web workspace's HTTP API (``/api/workspace/...``, ``/api/candles``): the request
bodies it takes and the candles it answers with. The person's watchlist, alerts,
positions and strategies are answered as their agent's own results
(:mod:`dexorder.contracts.agent_tools`), passed through as JSON.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: A candle of the page's chart: open time (ms), open, high, low, close, volume.
Bar = tuple[int, float, float, float, float, float]


class Candles(msgspec.Struct, kw_only=True):
    """``GET /api/candles?ticker=&timeframe=&start=&end=``: the range's candles, oldest
    first (at most :data:`MAX_BARS`, the newest of the range)."""

    ticker: str
    timeframe: str
    candles: list[Bar]


#: The most candles one ``GET /api/candles`` answers with.
MAX_BARS = 5000


class WatchlistBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /api/workspace/watchlist``: the whole list, as it should be."""

    tickers: list[str]


class AlertBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/workspace/alerts``: a price alert."""

    ticker: str
    condition: Literal["above", "below"]
    price: float
    note: str = ""


class OrderBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/workspace/orders``: a paper order (live orders are confirmed in the chat)."""

    ticker: str
    side: Literal["buy", "sell"]
    quantity: float
    order_type: Literal["market", "limit", "stop_loss", "take_profit"] = "market"
    limit_price: float | None = None


class BacktestBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/workspace/backtests``: one strategy over one market and range."""

    strategy: str
    ticker: str
    timeframe: str
    start: str
    end: str


class ProgressLine(msgspec.Struct, kw_only=True):
    """With ``?progress=1`` the answer is NDJSON: lines of how far the work got (fetching
    history from the exchange)..."""

    progress: str


class ResultLine(msgspec.Struct, kw_only=True):
    """... then the answer itself, as it would have been without ``progress``..."""

    result: msgspec.Raw


class ErrorLine(msgspec.Struct, kw_only=True):
    """... or the error the work ended with (its HTTP status, had it not streamed)."""

    error: str
    status: int


_encoder = msgspec.json.Encoder()


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)
