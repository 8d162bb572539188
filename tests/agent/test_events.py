"""Events: informational ones only to listeners; critical ones to a real ROUTER, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from agent.events import EventPublisher
from dexorder.schemas import EventAck, UserEvent, decode, encode
from dexorder.topics import user_event_topic
from launcher.ephemeral import free_port


class Gateway:
    """A ROUTER socket playing the gateway: records events, acks when told to."""

    def __init__(self, endpoint: str, ack: bool = True) -> None:
        self.sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.ack = ack
        self.received: list[UserEvent] = []
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            identity, body = await self.sock.recv_multipart()
            event = decode(body)
            assert isinstance(event, UserEvent)
            self.received.append(event)
            if self.ack:
                await self.sock.send_multipart(
                    [identity, encode(EventAck(event_id=event.event_id))]
                )

    async def until(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        self.sock.close()


async def test_critical_events_are_resent_until_acked(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    gateway = Gateway(endpoint, ack=False)
    pub = EventPublisher("alice", tmp_path / "outbox", endpoint, retry_s=0.1)
    pub.start()
    try:
        event = pub.critical("fill", {"ticker": "BINANCE:BTC/USDT", "quantity": 0.1})
        await gateway.until(lambda: len(gateway.received) >= 3)  # no ack: sent again and again
        assert {e.event_id for e in gateway.received} == {event.event_id}
        assert len(pub.pending()) == 1
        gateway.ack = True
        await gateway.until(lambda: not pub.pending())
        assert list((tmp_path / "outbox").iterdir()) == []
    finally:
        await pub.close()
        await gateway.close()


async def test_events_pending_at_shutdown_are_delivered_after_a_restart(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = EventPublisher("alice", tmp_path / "outbox", endpoint, retry_s=0.1)
    first.start()
    sent = [first.critical("alert", {"n": i}) for i in range(5)]
    await first.close()  # the gateway was not there: nothing acknowledged
    assert [e.event_id for e in first.pending()] == [e.event_id for e in sent]

    gateway = Gateway(endpoint)
    second = EventPublisher("alice", tmp_path / "outbox", endpoint, retry_s=0.1)
    second.start()
    try:
        await gateway.until(lambda: not second.pending())
        assert {e.event_id for e in gateway.received} == {e.event_id for e in sent}
        assert [e.payload["n"] for e in gateway.received[:5]] == [0, 1, 2, 3, 4]  # oldest first
    finally:
        await second.close()
        await gateway.close()


async def test_informational_events_go_out_only_while_someone_listens(tmp_path: Path) -> None:
    pub = EventPublisher("alice", tmp_path / "outbox", None)
    pub.start()
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        assert await pub.info("backtest", {"done": 1}) is False
        sub.connect(pub.xpub_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, user_event_topic("alice", "").encode())
        async with asyncio.timeout(10):
            while not pub.listening("backtest"):
                await asyncio.sleep(0.01)
        assert await pub.info("backtest", {"done": 2}) is True
        topic, body = await asyncio.wait_for(sub.recv_multipart(), 10)
        event = decode(body)
        assert topic == b"EVENT:alice|backtest"
        assert isinstance(event, UserEvent) and event.payload == {"done": 2} and not event.critical
        assert pub.stats["info_dropped"] == 1
    finally:
        sub.close()
        await pub.close()
