"""The relay over real ZeroMQ sockets: requests, work queue, fanout, and garbage on every socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.request

import msgspec
import pytest
import zmq
import zmq.asyncio

from dexorder.client import request
from dexorder.relay_keys import connect_publisher, publisher
from dexorder.schemas import (
    Ack,
    BackfillRequest,
    ErrorReply,
    RealtimeRequest,
    Tick,
    WorkItem,
    decode,
)
from launcher.ephemeral import RunningPlatform

pytestmark = pytest.mark.integration


def addr(p: RunningPlatform, port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def relay_health(p: RunningPlatform) -> dict[str, int]:
    with urllib.request.urlopen(p.part("relay").probe, timeout=2) as r:
        data: dict[str, int] = json.loads(r.read())
        return data


async def test_realtime_request_becomes_work_for_its_exchange(relay: RunningPlatform) -> None:
    r = relay.cfg.relay
    ctx = zmq.asyncio.Context.instance()
    work = ctx.socket(zmq.SUB)
    work.setsockopt(zmq.SUBSCRIBE, b"BINANCE:")
    work.connect(addr(relay, r.work_port))
    try:
        # PUB/SUB joins asynchronously: ask until the work item arrives
        for _ in range(50):
            reply = await request(
                addr(relay, r.router_port), RealtimeRequest(ticker="binance:eth/usdt")
            )
            assert reply == Ack()
            if await work.poll(100):
                break
        topic, payload = await work.recv_multipart()
        assert topic == b"BINANCE:"
        assert decode(payload) == WorkItem(kind="realtime", ticker="BINANCE:ETH/USDT")
    finally:
        work.close()


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        (RealtimeRequest(ticker="BTCUSDT"), "bad_ticker"),
        (RealtimeRequest(ticker="KRAKEN:BTC/USD"), "unknown_exchange"),
        (
            BackfillRequest(
                request_id="r1", ticker="BINANCE:BTC/USDT", timeframe="2m", start=0, end=1
            ),
            "bad_timeframe",
        ),
        (
            BackfillRequest(
                request_id="r2", ticker="BINANCE:BTC/USDT", timeframe="1m", start=5, end=5
            ),
            "bad_range",
        ),
        (
            BackfillRequest(
                request_id="r3",
                ticker="BINANCE:BTC/USDT",
                timeframe="1m",
                start=int(time.time() * 1000) + 86_400_000,
                end=int(time.time() * 1000) + 2 * 86_400_000,
            ),
            "future_range",
        ),
        (
            Tick(exchange="BINANCE", symbol="BTC/USDT", trade_id="1", price=1, amount=1, ts=1),
            "unsupported",
        ),
    ],
)
async def test_bad_requests_get_an_error_reply(
    relay: RunningPlatform, msg: object, code: str
) -> None:
    reply = await request(addr(relay, relay.cfg.relay.router_port), msg)  # type: ignore[arg-type]
    assert isinstance(reply, ErrorReply)
    assert reply.code == code
    assert reply.message


async def test_garbage_on_every_socket_is_survived_and_reported(relay: RunningPlatform) -> None:
    r = relay.cfg.relay
    ctx = zmq.asyncio.Context.instance()
    router = addr(relay, r.router_port)

    # ROUTER: garbage payloads from DEALER and REQ clients, wrong frame counts, oversize
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(router)
    req = ctx.socket(zmq.REQ)
    req.connect(router)
    try:
        for frames in (
            [b"\xff\x00garbage"],
            [b"a", b"b", b"c"],
            [os.urandom(100_000)],
            [msgspec.msgpack.encode({"type": "realtime_request"})],
            [b""],
        ):
            await dealer.send_multipart(frames)
            assert await dealer.poll(5000), f"no reply to {frames[0][:10]!r}"
            reply = decode((await dealer.recv_multipart())[-1])
            assert isinstance(reply, ErrorReply), reply
        await req.send(b"\x00\x01\x02")
        assert await req.poll(5000)
        assert isinstance(decode(await req.recv()), ErrorReply)
    finally:
        dealer.close(linger=0)
        req.close(linger=0)

    # raw bytes that are not even ZMTP, to every port
    for port in (r.router_port, r.work_port, r.xsub_port, r.xpub_port):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(os.urandom(512) + b"GET / HTTP/1.1\r\n\r\n")

    # XSUB: publishers sending frames that are not (topic, payload)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr(relay, r.xpub_port))
    pub = ctx.socket(zmq.PUB)
    connect_publisher(pub, publisher(relay.cfg, "stream"))  # a platform part, garbage and all
    # XPUB: a peer sending junk upstream
    junk = ctx.socket(zmq.XSUB)
    junk.connect(addr(relay, r.xpub_port))
    try:
        # wait until the fanout path is joined end to end
        for _ in range(100):
            await pub.send_multipart([b"BINANCE:BTC/USDT|tick", b"probe"])
            if await sub.poll(50):
                break
        while await sub.poll(100):
            await sub.recv_multipart()
        before = relay_health(relay)["malformed_fanout"]
        await pub.send_multipart([b"no-topic-separator-and-one-frame"])
        await pub.send_multipart([b"X:Y|tick", b"a", b"b", b"c"])
        await pub.send_multipart([b"A" * 1000, b"huge topic"])
        await junk.send(b"\x07not a subscription")
        for _ in range(100):
            if relay_health(relay)["malformed_fanout"] >= before + 4:
                break
            await asyncio.sleep(0.05)
        assert relay_health(relay)["malformed_fanout"] >= before + 4

        # still relaying (the garbage itself was relayed too: the relay does not filter)
        await pub.send_multipart([b"BINANCE:BTC/USDT|tick", b"after"])
        seen = []
        while await sub.poll(5000):
            seen.append(await sub.recv_multipart())
            if seen[-1] == [b"BINANCE:BTC/USDT|tick", b"after"]:
                break
        assert seen[-1] == [b"BINANCE:BTC/USDT|tick", b"after"]
        ack = await request(router, RealtimeRequest(ticker="BINANCE:BTC/USDT"))
        assert ack == Ack()
        assert relay.supervisor.running[0].proc.poll() is None
    finally:
        for zs in (sub, pub, junk):
            zs.close(linger=0)
