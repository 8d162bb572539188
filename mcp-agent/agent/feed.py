"""Live prices for the agent: 1m candle updates of the tickers it cares about, from the relay.

The agent subscribes to ``{ticker}|ohlc:1m`` on the relay's XPUB for the tickers it
needs a price of while it is awake (a market order, positions to mark; an agent on its
own also for its open orders and active alerts), and asks the relay to have it
streamed. A subscription keeps no agent awake. Each update goes to the handlers (the
paper broker, the alert book).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
import zmq
import zmq.asyncio

from dexorder.client import RelayError, request
from dexorder.config import Settings
from dexorder.market_validation import candle_problem
from dexorder.relay_keys import connect_subscriber
from dexorder.schemas import Candle, ErrorReply, InvalidMessage, RealtimeRequest, decode_candle
from dexorder.topics import ohlc_topic

log = structlog.get_logger(part="agent")

CandleHandler = Callable[[Candle], None]


class PriceFeed:
    """Candle updates from the relay for a changing set of tickers."""

    def __init__(self, cfg: Settings, handlers: list[CandleHandler]) -> None:
        self.router = cfg.relay.router_address
        self.sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        connect_subscriber(self.sub, cfg)  # a subscriber key only, never a publisher one
        self.handlers = handlers
        self.tickers: set[str] = set()
        self.last: dict[str, Candle] = {}
        self._updated = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()
        #: tickers the relay refused, and why
        self.refused: dict[str, str] = {}

    async def watch(self, ticker: str) -> None:
        """Subscribe to ``ticker``'s candles and ask the relay (in the background) to stream it."""
        if ticker in self.tickers:
            return
        self.tickers.add(ticker)
        self.refused.pop(ticker, None)
        self.sub.setsockopt(zmq.SUBSCRIBE, ohlc_topic(ticker, "1m").encode())
        task = asyncio.create_task(self._ask_relay(ticker))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _ask_relay(self, ticker: str) -> None:
        try:
            reply = await request(self.router, RealtimeRequest(ticker=ticker), timeout_s=5)
        except RelayError as exc:
            log.warning("relay unavailable; prices come once it is back", error=str(exc))
            return
        if isinstance(reply, ErrorReply):
            self.tickers.discard(ticker)
            self.sub.setsockopt(zmq.UNSUBSCRIBE, ohlc_topic(ticker, "1m").encode())
            self.refused[ticker] = f"{reply.code}: {reply.message}"
            async with self._updated:
                self._updated.notify_all()

    async def price(self, ticker: str, timeout_s: float = 10.0) -> float:
        """The latest close of ``ticker``, waiting for the first update if need be."""
        await self.watch(ticker)
        async with self._updated:
            try:
                await asyncio.wait_for(
                    self._updated.wait_for(lambda: ticker in self.last or ticker in self.refused),
                    timeout_s,
                )
            except TimeoutError:
                raise TimeoutError(
                    f"no live price for {ticker} within {timeout_s:g}s (is the platform up?)"
                ) from None
        if ticker in self.refused:
            raise ValueError(f"no prices for {ticker}: {self.refused[ticker]}")
        return self.last[ticker].close

    async def _run(self) -> None:
        while True:
            frames = await self.sub.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                candle = decode_candle(frames[1])
            except InvalidMessage:
                continue
            # only platform parts publish, and they validate; a bad price would still fill
            # the person's orders or fire their alerts, so it is checked once more here
            if candle_problem(candle, int(time.time() * 1000)) is not None:
                continue
            self.last[candle.ticker] = candle
            for handle in self.handlers:
                try:
                    handle(candle)
                except Exception:  # one handler's bug must not stop prices for the others
                    log.exception("candle handler failed", ticker=candle.ticker)
            async with self._updated:
                self._updated.notify_all()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        for task in self._requests:
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sub.close()
