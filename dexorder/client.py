"""Client of the platform's market data: live candles from the relay fanout.

>>> async for candle in subscribe("BINANCE:BTC/USDT", "1m"):
...     print(candle.close)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import zmq
import zmq.asyncio

from dexorder.config import Settings, load_config
from dexorder.market_validation import candle_problem
from dexorder.markets import Ticker, Timeframe
from dexorder.relay_keys import connect_subscriber
from dexorder.schemas import (
    BackfillRequest,
    Candle,
    ErrorReply,
    HistoryProgress,
    HistoryReady,
    InvalidMessage,
    Message,
    RealtimeRequest,
    decode,
    decode_candle,
    encode,
)
from dexorder.topics import history_progress_topic, history_ready_topic, ohlc_topic


class RelayError(RuntimeError):
    """The relay refused a request or did not answer in time."""


async def request(router: str, msg: Message, timeout_s: float = 5.0) -> Message:
    """Send one request to the relay ROUTER and return its reply (Ack or ErrorReply)."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, uuid.uuid4().bytes)
    sock.connect(router)
    try:
        await sock.send(encode(msg))
        if not await sock.poll(int(timeout_s * 1000)):
            raise RelayError(f"relay at {router} did not answer within {timeout_s}s")
        return decode(await sock.recv())
    finally:
        sock.close()


async def subscribe(
    ticker: str, timeframe: str = "1m", *, config: Settings | None = None
) -> AsyncIterator[Candle]:
    """Yield live candles of ``ticker`` (open-candle updates and closed candles).

    Raises :class:`~dexorder.markets.InvalidTicker` / ``InvalidTimeframe`` on
    bad input and :class:`RelayError` when the relay refuses the ticker.
    """
    t, tf = Ticker.parse(ticker), Timeframe.parse(timeframe)
    cfg = config or load_config()
    r = cfg.relay
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, ohlc_topic(str(t), tf.value).encode())
    connect_subscriber(sub, cfg)  # with a key where the relay asks for one
    try:
        reply = await request(r.router_address, RealtimeRequest(ticker=str(t)))
        if isinstance(reply, ErrorReply):
            raise RelayError(f"{reply.code}: {reply.message}")
        while True:
            frames = await sub.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                candle = decode_candle(frames[1])
            except InvalidMessage:
                continue  # a malformed publisher must not end the subscription
            if candle_problem(candle, int(time.time() * 1000)) is None:
                yield candle
    finally:
        sub.close()


async def backfill(
    ticker: str,
    timeframe: str,
    start: int,
    end: int,
    *,
    config: Settings | None = None,
    timeout_s: float = 600.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> HistoryReady:
    """Make sure the lake holds ``ticker``'s candles over ``[start, end)`` (ms).

    Follows DESIGN.md's history path: subscribe to ``HISTORY_READY:{id}`` first,
    then ask the relay. Always returns a :class:`HistoryReady`; any failure,
    refusal or time-out is in its ``error``. ``on_progress(fetched, total)`` is
    called as the exchange is paged.
    """
    t, tf = str(Ticker.parse(ticker)), Timeframe.parse(timeframe)
    cfg = config or load_config()
    r = cfg.relay
    request_id = uuid.uuid4().hex
    failed = HistoryReady(request_id=request_id, ticker=t, timeframe=tf.value, start=start, end=end)
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, history_ready_topic(request_id).encode())
    sub.setsockopt(zmq.SUBSCRIBE, history_progress_topic(request_id).encode())
    connect_subscriber(sub, cfg)  # with a key where the relay asks for one
    try:
        try:
            reply = await request(
                r.router_address,
                BackfillRequest(
                    request_id=request_id, ticker=t, timeframe=tf.value, start=start, end=end
                ),
            )
        except RelayError as exc:
            failed.error = str(exc)
            return failed
        if isinstance(reply, ErrorReply):
            failed.error = f"{reply.code}: {reply.message}"
            return failed
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if not await sub.poll(int(left * 1000)):
                break
            frames = await sub.recv_multipart()
            try:
                msg = decode(frames[-1])
            except InvalidMessage:
                continue
            if isinstance(msg, HistoryReady):
                return msg
            if isinstance(msg, HistoryProgress) and on_progress is not None:
                on_progress(msg.fetched, msg.total)
        failed.error = f"no answer within {timeout_s:.0f}s (is an ingestor of {t} running?)"
        return failed
    finally:
        sub.close()
