"""Telling the person things: informational events on XPUB, critical ones to the gateway.

Informational events (progress, backtest finished) are published on the
agent's own XPUB socket, and only while someone subscribes to their topic
(``EVENT:{user}|{kind}``): nobody listening, nothing sent.

Critical events (fills, triggered alerts, trade confirmations) each get an
id, are written to the outbox folder before anything else, and are sent on a
DEALER socket to the gateway's ROUTER, again and again until the gateway
answers with an :class:`EventAck`. An event leaves the outbox only when
acknowledged, so the ones pending at shutdown are on disk and go out on the
next start. The gateway delivers each event id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import structlog
import zmq
import zmq.asyncio

from dexorder.schemas import EventAck, InvalidMessage, UserEvent, decode, encode
from dexorder.topics import user_event_topic

log = structlog.get_logger(part="agent")


class EventPublisher:
    """The agent's event channels for one person."""

    def __init__(
        self,
        user: str,
        outbox: Path,
        gateway: str | None,
        xpub_endpoint: str = "tcp://127.0.0.1:*",
        retry_s: float = 1.0,
        token: Callable[[], str] | None = None,
    ) -> None:
        self.user = user
        self.token = token
        self.outbox = outbox
        self.gateway = gateway
        self.retry_s = retry_s
        outbox.mkdir(parents=True, exist_ok=True)
        ctx = zmq.asyncio.Context.instance()
        self.xpub = ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, 0)
        self.xpub.bind(xpub_endpoint)
        self.xpub_endpoint = str(self.xpub.getsockopt_string(zmq.LAST_ENDPOINT))
        self._subscribed: dict[bytes, int] = {}
        self._dealer: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._seq = 0
        self.stats = {"info_sent": 0, "info_dropped": 0, "critical_sent": 0, "acked": 0}

    # --- informational ---------------------------------------------------------

    async def _watch_subscriptions(self) -> None:
        while True:
            msg = await self.xpub.recv()
            if msg and msg[0] in (0, 1):
                topic = msg[1:]
                n = self._subscribed.get(topic, 0) + (1 if msg[0] == 1 else -1)
                if n > 0:
                    self._subscribed[topic] = n
                else:
                    self._subscribed.pop(topic, None)

    def listening(self, kind: str) -> bool:
        topic = user_event_topic(self.user, kind).encode()
        return any(topic.startswith(prefix) for prefix in self._subscribed)

    async def info(self, kind: str, payload: dict[str, object]) -> bool:
        """Publish an informational event if anyone listens; return whether it was sent."""
        if not self.listening(kind):
            self.stats["info_dropped"] += 1
            return False
        event = UserEvent(
            event_id=uuid.uuid4().hex,
            user=self.user,
            kind=kind,
            created_at=int(time.time() * 1000),
            payload=payload,
        )
        await self.xpub.send_multipart([user_event_topic(self.user, kind).encode(), encode(event)])
        self.stats["info_sent"] += 1
        return True

    # --- critical ----------------------------------------------------------------

    def critical(self, kind: str, payload: dict[str, object]) -> UserEvent:
        """Queue a critical event: on disk at once, sent until the gateway acknowledges it."""
        event = UserEvent(
            event_id=uuid.uuid4().hex,
            user=self.user,
            kind=kind,
            critical=True,
            created_at=int(time.time() * 1000),
            payload=payload,
        )
        # names sort in the order events were made (nanoseconds, then a counter)
        self._seq += 1
        path = self.outbox / f"{time.time_ns():020d}-{self._seq:08d}-{event.event_id}.msgpack"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encode(event))
        os.replace(tmp, path)
        self._wake.set()
        return event

    def pending(self) -> list[UserEvent]:
        """Critical events not yet acknowledged, oldest first."""
        out = []
        for path in sorted(self.outbox.glob("*.msgpack")):
            try:
                msg = decode(path.read_bytes())
            except (InvalidMessage, OSError):
                log.warning("unreadable outbox entry set aside", path=str(path))
                path.rename(path.with_suffix(".bad"))
                continue
            if isinstance(msg, UserEvent):
                out.append(msg)
        return out

    def _acked(self, event_id: str) -> None:
        for path in self.outbox.glob(f"*-{event_id}.msgpack"):
            path.unlink(missing_ok=True)
            self.stats["acked"] += 1

    async def _send_critical(self) -> None:
        assert self.gateway is not None
        dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.gateway)
        self._dealer = dealer
        loop = asyncio.get_running_loop()
        try:
            while True:
                pending = self.pending()
                if not pending:
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                waiting = {e.event_id for e in pending}
                auth = self.token() if self.token is not None else ""
                for event in pending:
                    await dealer.send(encode(msgspec.structs.replace(event, auth=auth)))
                    self.stats["critical_sent"] += 1
                deadline = loop.time() + self.retry_s
                while waiting and loop.time() < deadline and not self._wake.is_set():
                    if not await dealer.poll(50):
                        continue
                    try:
                        reply = decode(await dealer.recv())
                    except InvalidMessage:
                        continue
                    if isinstance(reply, EventAck):
                        self._acked(reply.event_id)
                        waiting.discard(reply.event_id)
                self._wake.clear()
        finally:
            dealer.close()

    # --- life ----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch_subscriptions()))
        if self.gateway:
            self._tasks.append(asyncio.create_task(self._send_critical()))

    async def close(self) -> None:
        """Stop sending; unacknowledged critical events stay in the outbox for next time."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.xpub.close()
