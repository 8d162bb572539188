"""Client of the platform's market data: live candles from the relay fanout.

>>> async for candle in subscribe("BINANCE:BTC/USDT", "1m"):
...     print(candle.close)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from dexorder.config import Settings, load_config
from dexorder.markets import Ticker, Timeframe
from dexorder.schemas import (
    Candle,
    ErrorReply,
    InvalidMessage,
    Message,
    RealtimeRequest,
    decode,
    decode_candle,
    encode,
)
from dexorder.topics import ohlc_topic


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
    sub.connect(f"tcp://{r.host}:{r.xpub_port}")
    try:
        reply = await request(f"tcp://{r.host}:{r.router_port}", RealtimeRequest(ticker=str(t)))
        if isinstance(reply, ErrorReply):
            raise RelayError(f"{reply.code}: {reply.message}")
        while True:
            frames = await sub.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                yield decode_candle(frames[1])
            except InvalidMessage:
                continue  # a malformed publisher must not end the subscription
    finally:
        sub.close()
