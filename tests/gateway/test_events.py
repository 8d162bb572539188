"""Critical events from a real agent publisher to the gateway's ROUTER: delivered once each."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import zmq
import zmq.asyncio
from sqlalchemy import Engine

from agent.events import EventPublisher
from dexorder.schemas import UserEvent, encode
from gateway.events import DeliveredEvents, EventRouter
from launcher.ephemeral import free_port


async def until(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(router: EventRouter):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(router.run())
    ready = asyncio.ensure_future(router.ready.wait())
    await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # it could not start: say why
    try:
        yield router
    finally:
        router.stop()
        await task


async def test_each_event_is_delivered_once_even_when_sent_again(
    engine: Engine, tmp_path: Path
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    shown: list[UserEvent] = []
    channel_up = False

    async def deliver(event: UserEvent) -> bool:
        if not channel_up:
            return False  # no channel reached: the agent must send it again
        shown.append(event)
        return True

    router = EventRouter(endpoint, DeliveredEvents(engine), deliver)
    async with running(router):
        pub = EventPublisher("alice", tmp_path / "outbox", endpoint, retry_s=0.1)
        pub.start()
        try:
            fill = pub.critical("fill", {"qty": 1})
            await until(lambda: router.stats["undelivered"] >= 2)
            assert shown == [] and len(pub.pending()) == 1
            channel_up = True
            await until(lambda: not pub.pending())
            assert [e.event_id for e in shown] == [fill.event_id]
        finally:
            await pub.close()

        # the same event again (say the ack was lost and the agent restarted): not shown twice
        dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)
        try:
            await dealer.send(encode(fill))
            assert await dealer.poll(10_000)
            assert b"event_ack" in await dealer.recv()
            await dealer.send(b"\x00garbage")
            await until(lambda: router.stats["malformed"] == 1)
        finally:
            dealer.close()
    assert [e.event_id for e in shown] == [fill.event_id]
    assert router.stats["duplicates"] == 1

    # a new router on the same database (a gateway restart) still knows it
    router2 = EventRouter(endpoint, DeliveredEvents(engine), deliver)
    async with running(router2):
        pub = EventPublisher("alice", tmp_path / "outbox2", endpoint, retry_s=0.1)
        pub.start()
        try:
            path = pub.outbox / f"00000000000000000001-00000001-{fill.event_id}.msgpack"
            path.write_bytes(encode(fill))
            pub._wake.set()
            await until(lambda: not pub.pending())
        finally:
            await pub.close()
    assert len(shown) == 1 and router2.stats["duplicates"] >= 1 and router2.stats["delivered"] == 0
