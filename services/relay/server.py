"""The relay: a stateless ZeroMQ router (see DESIGN.md for the four channels).

* ROUTER (5559): client requests, each answered at once (Ack or ErrorReply).
* PUB (5555): work for the ingestors, topic = exchange prefix (``BINANCE:``).
* XSUB (5557) ← publishers, XPUB (5558) → subscribers: market data and
  notifications, forwarded by libzmq's own proxy in a thread so the fanout
  runs at native speed. A copy of the traffic goes to a PUB capture socket;
  an inspector reads it (up to a budget per time window) and counts malformed
  frames. Being a PUB, the capture drops what the inspector does not read, so
  it never slows the fanout; under heavy load the count is a sample.

Only platform parts publish: XSUB is a ZeroMQ CURVE server and a ZAP handler (pyzmq's
authenticator, in its own thread) lets in only the public keys on the allowlist
(``dexorder/relay_keys.py``). A publisher without an allowed key never completes its
handshake, so nothing it sends reaches a subscriber. XPUB does the same for subscribers
when ``relay.curve_subscribers`` is on (the cluster). The ROUTER stays open: a request
only asks for public market data, each is validated, and the work it makes is what any
client may ask for; in the cluster the NetworkPolicy limits who reaches it. CURVE costs
a handshake per connection and encryption per message on that connection only, so the
fanout's speed to unkeyed local subscribers is unchanged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import zmq
import zmq.asyncio
from prometheus_client import Counter
from zmq.auth.thread import ThreadAuthenticator

from dexorder.health import CounterReading, PartCounters
from dexorder.relay_keys import (
    PUBLISHER_DOMAIN,
    SUBSCRIBER_DOMAIN,
    RelayServerKeys,
    relay_server_keys,
    serve_curve,
)
from dexorder.schemas import ErrorReply, encode
from services.relay.requests import Outcome, handle_request

if TYPE_CHECKING:
    from dexorder.config import RelayConfig, Settings

REQUESTS = Counter("relay_requests_total", "Client requests by outcome", ["outcome"])
MALFORMED = Counter("relay_malformed_frames_total", "Malformed frames seen, by socket", ["socket"])
REFUSED = Counter(
    "relay_refused_connections_total", "Connections whose CURVE key is not allowed", ["door"]
)

log = structlog.get_logger(part="relay")

#: The inspector reads at most this many captured messages per window, so on a
#: busy relay it samples instead of taking a core from the fanout.
_INSPECT_BUDGET = 2_000
_INSPECT_WINDOW_S = 0.05


@dataclass
class RelayAddresses:
    router: str
    work: str
    xsub: str
    xpub: str

    @classmethod
    def from_section(cls, relay: RelayConfig) -> RelayAddresses:
        """The four channels the ``relay`` section names."""
        return cls(
            router=relay.router_address,
            work=relay.work_address,
            xsub=relay.xsub_address,
            xpub=relay.xpub_address,
        )


def _split_envelope(frames: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """Split a ROUTER message into its reply envelope and its one payload frame.

    DEALER clients send ``[id, payload]``, REQ clients ``[id, b"", payload]``.
    """
    if len(frames) >= 2 and frames[1] == b"":
        envelope, body = frames[:2], frames[2:]
    else:
        envelope, body = frames[:1], frames[1:]
    return envelope, body[0] if len(body) == 1 else None


def _valid_fanout(frames: list[bytes]) -> bool:
    if len(frames) == 1 and frames[0][:1] in (b"\x00", b"\x01"):
        return True  # a subscription travelling upstream
    if len(frames) != 2:
        return False
    topic = frames[0]
    return b":" in topic and len(topic) < 256


class _Allowlist:
    """The ZAP credentials check for one door: only the listed public keys get in."""

    def __init__(self, door: str, allowed: dict[bytes, str]) -> None:
        self.door, self.allowed = door, allowed

    def callback(self, domain: str, key: bytes) -> bool:
        part = self.allowed.get(key)
        if part is None:
            REFUSED.labels(self.door).inc()
            log.warning("connection refused: key not allowed", door=self.door, key=key[:8])
            return False
        log.info("connection allowed", door=self.door, part=part)
        return True


@dataclass
class Relay:
    """Binds the four channels and serves until :meth:`stop`."""

    addresses: RelayAddresses
    exchanges: frozenset[str]
    keys: RelayServerKeys
    ctx: zmq.asyncio.Context = field(default_factory=zmq.asyncio.Context)
    #: figures for ``/healthz``, counted from construction
    counters: PartCounters = field(
        default_factory=lambda: PartCounters(
            {
                "requests": REQUESTS,
                "errors": CounterReading(REQUESTS, {"outcome": "refused"}),
                "malformed_fanout": CounterReading(MALFORMED, {"socket": "fanout"}),
                "refused_publishers": CounterReading(REFUSED, {"door": "publishers"}),
                "refused_subscribers": CounterReading(REFUSED, {"door": "subscribers"}),
            }
        )
    )
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _proxy_thread: threading.Thread | None = None
    _capture_addr: str = ""
    _control_addr: str = ""
    _sync: zmq.Context[zmq.Socket[bytes]] | None = None
    _auth: ThreadAuthenticator | None = None

    @classmethod
    def from_config(cls, cfg: Settings) -> Relay:
        """The relay of the ``relay`` section, taking work for the configured exchanges."""
        return cls(
            RelayAddresses.from_section(cfg.relay),
            frozenset(e.name.upper() for e in cfg.exchanges),
            relay_server_keys(cfg),
        )

    def _start_auth(self, sync: zmq.Context[zmq.Socket[bytes]]) -> None:
        # The ZAP handler must run before the CURVE sockets bind: with none, libzmq
        # would let every key in.
        auth = self._auth = ThreadAuthenticator(sync)
        auth.start()
        doors = {PUBLISHER_DOMAIN: ("publishers", self.keys.publishers)}
        if self.keys.subscribers is not None:
            doors[SUBSCRIBER_DOMAIN] = ("subscribers", self.keys.subscribers)
        for domain, (door, allowed) in doors.items():
            auth.configure_curve_callback(domain, _Allowlist(door, dict(allowed)))

    def _start_proxy(self) -> None:
        # inproc needs one libzmq context: the proxy thread shares the asyncio one's
        sync = self._sync = zmq.Context.shadow(self.ctx.underlying)
        self._start_auth(sync)
        xsub = sync.socket(zmq.XSUB)
        xpub = sync.socket(zmq.XPUB)
        serve_curve(xsub, self.keys.server, PUBLISHER_DOMAIN)
        if self.keys.subscribers is not None:
            serve_curve(xpub, self.keys.server, SUBSCRIBER_DOMAIN)
        capture = sync.socket(zmq.PUB)
        control = sync.socket(zmq.PAIR)
        for s in (xsub, xpub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 100_000)
            s.setsockopt(zmq.SNDHWM, 100_000)
        xsub.bind(self.addresses.xsub)
        xpub.bind(self.addresses.xpub)
        self._capture_addr = f"inproc://relay-capture-{id(self)}"
        capture.bind(self._capture_addr)
        capture.setsockopt(zmq.SNDHWM, 10_000)
        control_addr = f"inproc://relay-control-{id(self)}"
        control.bind(control_addr)
        self._control_addr = control_addr

        def run() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, capture, control)
            except zmq.ContextTerminated:
                pass
            finally:
                for s in (xsub, xpub, capture, control):
                    s.close(linger=0)

        self._proxy_thread = threading.Thread(target=run, name="relay-fanout", daemon=True)
        self._proxy_thread.start()

    async def _inspect_fanout(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 10_000)
        sub.connect(self._capture_addr)
        window_end, seen = 0.0, 0
        try:
            while True:
                frames = await sub.recv_multipart()
                seen += 1
                if seen >= _INSPECT_BUDGET:
                    # over budget: let the capture socket drop the rest of this window
                    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
                if time.monotonic() >= window_end:
                    window_end, seen = time.monotonic() + _INSPECT_WINDOW_S, 0
                if not _valid_fanout(frames):
                    MALFORMED.labels("fanout").inc()
                    if self.counters["malformed_fanout"] % 1000 == 1:
                        log.warning(
                            "malformed fanout frame",
                            frames=len(frames),
                            first=frames[0][:32] if frames else b"",
                        )
        finally:
            sub.close(linger=0)

    async def serve(self) -> None:
        """Serve client requests until :meth:`stop` is called."""
        router = self.ctx.socket(zmq.ROUTER)
        work = self.ctx.socket(zmq.PUB)
        for s in (router, work):
            s.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        router.bind(self.addresses.router)
        work.bind(self.addresses.work)
        self._start_proxy()
        inspector = asyncio.create_task(self._inspect_fanout())
        stop = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                recv = asyncio.ensure_future(router.recv_multipart())
                done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    break
                frames = recv.result()
                await self._handle(router, work, frames)
        finally:
            inspector.cancel()
            stop.cancel()
            router.close(linger=0)
            work.close(linger=0)
            assert self._sync is not None
            ctl = self._sync.socket(zmq.PAIR)
            ctl.connect(self._control_addr)
            ctl.send(b"TERMINATE")
            ctl.close()
            if self._proxy_thread:
                self._proxy_thread.join(timeout=5)
            if self._auth is not None:
                self._auth.stop()

    async def _handle(
        self, router: zmq.asyncio.Socket, work: zmq.asyncio.Socket, frames: list[bytes]
    ) -> None:
        envelope, payload = _split_envelope(frames)
        if payload is None:
            MALFORMED.labels("router").inc()
            outcome = Outcome(
                ErrorReply(
                    code="malformed", message="expected exactly one payload frame per request"
                )
            )
        else:
            outcome = handle_request(payload, self.exchanges, int(time.time() * 1000))
        if outcome.work is not None:
            topic, item = outcome.work
            await work.send_multipart([topic.encode(), encode(item)])
            REQUESTS.labels("accepted").inc()
        else:
            REQUESTS.labels("refused").inc()
            log.info("request refused", reply=outcome.reply)
        await router.send_multipart([*envelope, encode(outcome.reply)])

    def stop(self) -> None:
        self._stop.set()
