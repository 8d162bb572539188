"""Live market candles for web pages: one SUB socket on the relay's XPUB per gateway,
shared by every chat socket that subscribed, and each socket's own coalesced stream.

Only market topics (``{ticker}|ohlc:{tf}``) are ever subscribed here: a person's events
(``EVENT:``, ``RULE:``) never travel this path, whatever a page asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
import zmq
import zmq.asyncio

from dexorder.client import RelayError, request
from dexorder.config import Settings
from dexorder.contracts.chat import OhlcFrame, ServerFrame
from dexorder.market_validation import candle_problem
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.relay_keys import connect_subscriber
from dexorder.schemas import Candle, ErrorReply, InvalidMessage, RealtimeRequest, decode_candle
from dexorder.topics import ohlc_topic

log = structlog.get_logger(part="gateway")

#: The most topics one socket may follow at once.
MAX_SUBSCRIPTIONS = 32
#: The shortest gap between two updates of one topic on one socket (4 a second at most).
MIN_INTERVAL_S = 0.25
#: After the relay did not answer, subscriptions are refused at once for this long (a
#: page subscribing its whole watchlist must not wait out the relay's time-out for each).
RELAY_DOWN_S = 10.0


class BadTopic(ValueError):
    """A topic a page may not subscribe to; the message says why (a 400)."""


class UnknownMarket(ValueError):
    """The relay does not know the topic's ticker (a 404)."""


class FeedUnavailable(RuntimeError):
    """The relay did not answer (a 503)."""


def parse_topic(topic: str) -> str:
    """The canonical ``{ticker}|ohlc:{tf}`` of ``topic``; :class:`BadTopic` for anything
    else (another kind of topic, a bad ticker or timeframe)."""
    ticker, sep, kind = topic.partition("|")
    if not sep or not kind.startswith("ohlc:"):
        raise BadTopic(f"topic must be {{ticker}}|ohlc:{{timeframe}}, not {topic[:80]!r}")
    try:
        t, tf = Ticker.parse(ticker), Timeframe.parse(kind.removeprefix("ohlc:"))
    except (InvalidTicker, InvalidTimeframe) as exc:
        raise BadTopic(str(exc)) from None
    return ohlc_topic(str(t), tf.value)


def frame_of(topic: str, c: Candle) -> OhlcFrame:
    return OhlcFrame(
        topic=topic,
        time=c.open_time,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
        closed=c.closed,
    )


@dataclass
class Coalescer:
    """What one socket still has to send: per topic the newest update of each candle
    (a closed candle is never dropped for the next one's first update), and when each
    topic was last sent. Pure: the clock is given."""

    interval_s: float = MIN_INTERVAL_S
    pending: dict[str, dict[int, OhlcFrame]] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)

    def offer(self, frame: OhlcFrame) -> None:
        self.pending.setdefault(frame.topic, {})[frame.time] = frame

    def drop(self, topic: str) -> None:
        self.pending.pop(topic, None)
        self.sent_at.pop(topic, None)

    def due(self, now: float) -> list[OhlcFrame]:
        """The frames to send now (oldest candle first per topic)."""
        out: list[OhlcFrame] = []
        for topic in list(self.pending):
            if now - self.sent_at.get(topic, -1e9) < self.interval_s:
                continue
            batch = self.pending.pop(topic)
            out.extend(batch[t] for t in sorted(batch))
            self.sent_at[topic] = now
        return out

    def next_due(self, now: float) -> float | None:
        """Seconds until something is due (0: now), None when nothing waits."""
        if not self.pending:
            return None
        soonest = min(self.sent_at.get(t, -1e9) + self.interval_s for t in self.pending)
        return max(0.0, soonest - now)


Listener = Callable[[str, Candle], None]


class MarketFeed:
    """The relay's live candles for the gateway's sockets. Its SUB socket is opened with
    the first subscription and closed with the last; each topic is subscribed on it once."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self._listeners: dict[str, set[Listener]] = {}
        self._sub: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._relay_down_until = 0.0

    async def add(self, topic: str, listener: Listener) -> None:
        """``listener`` gets ``topic``'s candles; :class:`UnknownMarket` if the relay refuses
        its ticker, :class:`FeedUnavailable` if it does not answer."""
        if topic not in self._listeners:
            ticker = topic.partition("|")[0]
            if time.monotonic() < self._relay_down_until:
                raise FeedUnavailable("live prices are unavailable (the relay does not answer)")
            try:
                # the relay starts streaming it (an ingestor follows it) or refuses it
                reply = await request(self.cfg.relay.router_address, RealtimeRequest(ticker=ticker))
            except RelayError as exc:
                self._relay_down_until = time.monotonic() + RELAY_DOWN_S
                raise FeedUnavailable(f"live prices are unavailable: {exc}") from None
            if isinstance(reply, ErrorReply):
                raise UnknownMarket(f"no such market {ticker}: {reply.message}")
            if topic not in self._listeners:  # another socket may have added it meanwhile
                self._socket().setsockopt(zmq.SUBSCRIBE, topic.encode())
                self._listeners[topic] = set()
        self._listeners[topic].add(listener)

    def remove(self, topic: str, listener: Listener) -> None:
        listeners = self._listeners.get(topic)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[topic]
            if self._sub is not None:
                self._sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        if not self._listeners:
            self._stop()

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sub is None:
            sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            connect_subscriber(sub, self.cfg)  # with a key where the relay asks for one
            self._sub = sub
            self._reader = asyncio.create_task(self._read(sub))
        return self._sub

    def _stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    async def _read(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sub.recv_multipart()
            if len(frames) != 2:
                continue
            topic = frames[0].decode(errors="replace")
            listeners = self._listeners.get(topic)  # exact topic: SUB matches prefixes
            if not listeners:
                continue
            try:
                candle = decode_candle(frames[1])
            except InvalidMessage:
                continue  # a malformed publisher must not end the feed
            if candle_problem(candle, int(time.time() * 1000)) is not None:
                continue
            for listener in list(listeners):
                listener(topic, candle)

    def close(self) -> None:
        self._listeners.clear()
        self._stop()


class Subscriptions:
    """One chat socket's subscriptions: at most :data:`MAX_SUBSCRIPTIONS`, each sent at
    most every :data:`MIN_INTERVAL_S`, by one sender task of the socket's."""

    def __init__(self, feed: MarketFeed, send: Callable[[ServerFrame], Awaitable[None]]) -> None:
        self.feed = feed
        self.send = send
        self.topics: set[str] = set()
        self.coalescer = Coalescer()
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def subscribe(self, topic: str) -> str:
        """Follow ``topic`` (canonical form returned); raises :class:`BadTopic`,
        :class:`UnknownMarket`, :class:`FeedUnavailable`, or :class:`TooMany`."""
        canonical = parse_topic(topic)
        if canonical in self.topics:
            return canonical
        if len(self.topics) >= MAX_SUBSCRIPTIONS:
            raise TooMany(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        await self.feed.add(canonical, self._on_candle)
        self.topics.add(canonical)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop())
        return canonical

    def unsubscribe(self, topic: str) -> None:
        with contextlib.suppress(BadTopic):
            topic = parse_topic(topic)
        if topic in self.topics:
            self.topics.discard(topic)
            self.feed.remove(topic, self._on_candle)
            self.coalescer.drop(topic)

    def _on_candle(self, topic: str, candle: Candle) -> None:
        self.coalescer.offer(frame_of(topic, candle))
        self._wake.set()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self.coalescer.next_due(loop.time())
            if wait is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if wait > 0:
                await asyncio.sleep(wait)
            for frame in self.coalescer.due(loop.time()):
                await self.send(frame)

    async def close(self) -> None:
        for topic in list(self.topics):
            self.feed.remove(topic, self._on_candle)
        self.topics.clear()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(BaseException):
                await self._sender


class TooMany(ValueError):
    """Over :data:`MAX_SUBSCRIPTIONS` (a 429)."""
