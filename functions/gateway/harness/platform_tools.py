"""Tools that run in the gateway itself: market data anyone may see.

Prices come from the exchange through CCXT (the emulator on one machine); candles
from the lake, backfilled through the relay when missing (DESIGN.md's history path).
Each returns its contract's result (:mod:`dexorder.contracts.platform_tools`), and each
spec carries its contract's traits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from dexorder.client import backfill
from dexorder.config import Settings
from dexorder.contracts import platform_tools as contract
from dexorder.contracts.chat import JsonObject
from dexorder.contracts.platform_tools import Backfilled, CandleSummary, Price
from dexorder.exchanges import make_exchange
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.times import iso, parse_when
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.model import ToolSpec

Progress = Callable[[str], Awaitable[None]]

#: Candles sent to the page for a chart (the newest ones).
CHART_CANDLES = 300

_TICKER = {"type": "string", "description": "EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT"}
_RANGE = {
    "ticker": _TICKER,
    "timeframe": {"type": "string", "enum": [t.value for t in Timeframe]},
    "start": {"type": "string", "description": "YYYY-MM-DD or ISO 8601 (UTC)"},
    "end": {"type": "string", "description": "YYYY-MM-DD or ISO 8601 (UTC)"},
}

#: Kept in the gateway's knowledge base (RAG), for this person only.
REMEMBER = ToolSpec(
    contract.REMEMBER.name,
    "Keep a fact about the person (a preference, a rule of theirs) for later conversations.",
    {
        "type": "object",
        "properties": {"fact": {"type": "string", "maxLength": 2000}},
        "required": ["fact"],
    },
    contract.REMEMBER.traits,
)

SPECS = [
    ToolSpec(
        contract.GET_PRICE.name,
        "The last traded price of a market, from its exchange.",
        {"type": "object", "properties": {"ticker": _TICKER}, "required": ["ticker"]},
        contract.GET_PRICE.traits,
    ),
    ToolSpec(
        contract.GET_CANDLES.name,
        "OHLC candles of a market over a time range (fetched from the exchange if the "
        "platform lacks them): a summary, and a chart for the person.",
        {"type": "object", "properties": _RANGE, "required": list(_RANGE)},
        contract.GET_CANDLES.traits,
    ),
    ToolSpec(
        contract.REQUEST_BACKFILL.name,
        "Make the platform fetch and keep a market's candles over a time range.",
        {"type": "object", "properties": _RANGE, "required": list(_RANGE)},
        contract.REQUEST_BACKFILL.traits,
    ),
]


class PlatformTools:
    """The gateway's own tools; one CCXT client per exchange, kept between turns."""

    names = frozenset(s.name for s in SPECS)

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self._exchanges: dict[str, Any] = {}

    def _exchange(self, name: str) -> Any:
        if name not in self._exchanges:
            ex = next((e for e in self.cfg.exchanges if e.name.upper() == name), None)
            if ex is None:
                known = ", ".join(e.name for e in self.cfg.exchanges)
                raise ValueError(f"the platform does not follow {name} (it follows {known})")
            url = self.cfg.emulator_url if ex.emulated else None
            self._exchanges[name] = make_exchange(ex.ccxt_id, url)
        return self._exchanges[name]

    async def call(self, name: str, args: JsonObject, progress: Progress) -> ToolOutcome:
        try:
            if name == contract.GET_PRICE.name:
                return ToolOutcome(await self._price(str(args.get("ticker", ""))))
            t, tf, start, end = _range(args)
            if name == contract.GET_CANDLES.name:
                return ToolOutcome(await self._candles(t, tf, start, end, progress))
            if name == contract.REQUEST_BACKFILL.name:
                return ToolOutcome(await self._backfill(t, tf, start, end, progress))
        except (ValueError, InvalidTicker, InvalidTimeframe) as exc:
            return ToolOutcome(str(exc), is_error=True)
        except Exception as exc:  # an exchange or the lake failing is told, not raised
            return ToolOutcome(f"{type(exc).__name__}: {exc}", is_error=True)
        return ToolOutcome(f"unknown tool {name}", is_error=True)

    async def _price(self, ticker: str) -> Price:
        t = Ticker.parse(ticker)
        quote = await self._exchange(t.exchange).fetch_ticker(t.symbol)
        return Price(ticker=str(t), last=quote["last"], time=quote.get("datetime"))

    async def _backfill(
        self, t: Ticker, tf: Timeframe, start: int, end: int, progress: Progress
    ) -> Backfilled:
        told: set[asyncio.Task[None]] = set()

        def on_progress(fetched: int, total: int) -> None:
            task = asyncio.ensure_future(progress(f"fetched {fetched:,} of {total:,} candles"))
            told.add(task)
            task.add_done_callback(told.discard)

        ready = await backfill(
            str(t), tf.value, start, end, config=self.cfg, on_progress=on_progress
        )
        if ready.error:
            raise ValueError(f"backfill failed: {ready.error}")
        return Backfilled(ticker=str(t), timeframe=tf.value, start=iso(start), end=iso(end))

    async def _candles(
        self, t: Ticker, tf: Timeframe, start: int, end: int, progress: Progress
    ) -> CandleSummary:
        from dexorder.lake.candles import load_candles  # pandas: only when asked

        await progress(f"loading {t} {tf.value} candles")
        frame = await load_candles(self.cfg, str(t), tf.value, start, end)
        tail = frame.tail(CHART_CANDLES)
        return CandleSummary(
            ticker=str(t),
            timeframe=tf.value,
            count=len(frame),
            start=iso(_ms(frame.index[0])),
            end=iso(_ms(frame.index[-1])),
            first_close=float(frame["close"].iloc[0]),
            last_close=float(frame["close"].iloc[-1]),
            high=float(frame["high"].max()),
            low=float(frame["low"].min()),
            candles=[
                (_ms(ts), float(o), float(h), float(lo), float(c))
                for ts, (o, h, lo, c) in zip(
                    tail.index, tail[["open", "high", "low", "close"]].to_numpy(), strict=True
                )
            ],
        )

    async def close(self) -> None:
        for ex in self._exchanges.values():
            await ex.close()
        self._exchanges.clear()


def _ms(ts: Any) -> int:
    """An open time of the lake's frames (a pandas Timestamp, or ms) as epoch ms."""
    return int(ts.timestamp() * 1000) if hasattr(ts, "timestamp") else int(ts)


def _range(args: JsonObject) -> tuple[Ticker, Timeframe, int, int]:
    t = Ticker.parse(str(args.get("ticker", "")))
    tf = Timeframe.parse(str(args.get("timeframe", "1h")))
    start, end = parse_when(str(args.get("start", ""))), parse_when(str(args.get("end", "")))
    if end <= start:
        raise ValueError("start must be before end")
    return t, tf, start, end
