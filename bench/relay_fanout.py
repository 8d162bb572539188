"""(b) Relay fanout msgs/s to 1 and to 10 subscribers, against a raw ``zmq.proxy``.

Both proxies run as their own process with the same high-water marks; one
publisher process and 1 or 10 subscriber processes; the figure is messages
delivered to all subscribers per second, and the relay's ratio to the raw proxy.
The relay's publisher proves itself with a platform part's CURVE key, as the real
publishers do (so its figure includes CURVE's per-message encryption); the raw proxy
has none.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from multiprocessing import synchronize
from pathlib import Path

import zmq

from bench.common import free_port, row
from dexorder.config import Settings, tcp_address
from dexorder.relay_keys import (
    RelayPublisher,
    connect_publisher,
    publisher_keys,
    server_public_key,
)

TOPIC = b"BINANCE:BTC/USDT|ohlc:1m"
PAYLOAD = b"x" * 120  # about one encoded candle
HWM = 100_000

RAW_PROXY = f"""
import sys, zmq
ctx = zmq.Context()
xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
for s in (xsub, xpub):
    s.setsockopt(zmq.RCVHWM, {HWM}); s.setsockopt(zmq.SNDHWM, {HWM})
xsub.bind(sys.argv[1]); xpub.bind(sys.argv[2])
zmq.proxy(xsub, xpub)
"""


def _subscriber(
    xpub: str, ready: synchronize.Event, results: mp.Queue[tuple[int, float, float]]
) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, HWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"BINANCE:")
    sub.setsockopt(zmq.SUBSCRIBE, b"END")
    sub.connect(xpub)
    while sub.recv_multipart()[1] != b"warmup":
        pass
    ready.set()
    count, first = 0, 0.0
    while True:
        topic, body = sub.recv_multipart(copy=True)
        if topic == b"END":
            break
        if body == b"warmup":
            continue
        if not count:
            first = time.perf_counter()
        count += 1
    results.put((count, first, time.perf_counter()))
    sub.close(linger=0)
    ctx.term()


def _start_proxy(
    kind: str, xsub: str, xpub: str
) -> tuple[subprocess.Popen[bytes], str, RelayPublisher | str]:
    """The proxy process, its health URL, and how a publisher connects to it."""
    if kind == "raw":
        return subprocess.Popen([sys.executable, "-c", RAW_PROXY, xsub, xpub]), "", xsub
    home = Path(tempfile.mkdtemp())
    cfg = Settings(home=home)  # the relay and this publisher share its key files
    target = RelayPublisher(xsub, server_public_key(cfg), publisher_keys(cfg, "stream"))
    ports = {k: str(free_port()) for k in ("ROUTER", "WORK", "HEALTH")}
    env = {
        **os.environ,
        "DEXORDER_HOME": str(home),
        "DEXORDER_LOG_LEVEL": "warning",
        "DEXORDER_RELAY__XSUB_PORT": xsub.rsplit(":", 1)[1],
        "DEXORDER_RELAY__XPUB_PORT": xpub.rsplit(":", 1)[1],
        "DEXORDER_RELAY__ROUTER_PORT": ports["ROUTER"],
        "DEXORDER_RELAY__WORK_PORT": ports["WORK"],
        "DEXORDER_RELAY__HEALTH_PORT": ports["HEALTH"],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.relay"], env=env, stderr=subprocess.DEVNULL
    )
    return proc, f"http://127.0.0.1:{ports['HEALTH']}/healthz", target


def _wait_http(url: str) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=0.5).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def fanout(kind: str, n_subs: int, n_msgs: int) -> tuple[float, float]:
    """Messages per second delivered to ``n_subs`` subscribers through ``kind``,
    and the fraction of the messages sent that were delivered."""
    xsub, xpub = tcp_address("127.0.0.1", free_port()), tcp_address("127.0.0.1", free_port())
    proxy, health, target = _start_proxy(kind, xsub, xpub)
    try:
        if health:
            _wait_http(health)
        mpctx = mp.get_context("spawn")
        results = mpctx.Queue()
        readies = [mpctx.Event() for _ in range(n_subs)]
        subs = [mpctx.Process(target=_subscriber, args=(xpub, r, results)) for r in readies]
        for p in subs:
            p.start()
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        connect_publisher(pub, target)
        while not all(r.is_set() for r in readies):
            pub.send_multipart([TOPIC, b"warmup"])
            time.sleep(0.01)
        send = pub.send_multipart
        msg = [TOPIC, PAYLOAD]
        for _ in range(n_msgs):
            send(msg)
        for _ in range(50):
            pub.send_multipart([b"END", b""])
            time.sleep(0.01)
            if all(not p.is_alive() for p in subs):
                break
        got = [results.get(timeout=120) for _ in subs]
        for p in subs:
            p.join(10)
        pub.close(linger=0)
        ctx.term()
    finally:
        proxy.terminate()
        proxy.wait(10)
    delivered = sum(g[0] for g in got)
    elapsed = max(g[2] for g in got) - min(g[1] for g in got)
    return delivered / elapsed, delivered / (n_msgs * n_subs)


def main(n_msgs: int = 300_000) -> dict[str, float]:
    print(f"(b) relay fanout, {n_msgs:,} messages of {len(PAYLOAD)} bytes")
    out: dict[str, float] = {}
    for n_subs in (1, 10):
        msgs = n_msgs if n_subs == 1 else n_msgs // 4
        runs = [(fanout("raw", n_subs, msgs), fanout("relay", n_subs, msgs)) for _ in range(3)]
        (raw, raw_frac), (relay, relay_frac) = (
            sorted((r[i] for r in runs), key=lambda x: x[0])[1] for i in (0, 1)
        )  # medians of three alternating runs
        row(
            f"to {n_subs} subscriber(s): relay",
            f"{relay:,.0f} msgs/s",
            f"raw zmq.proxy {raw:,.0f}/s, ratio {relay / raw:.2f}; "
            f"delivered {relay_frac:.0%} vs {raw_frac:.0%}",
        )
        out[f"relay_{n_subs}"], out[f"raw_{n_subs}"] = relay, raw
    return out


if __name__ == "__main__":
    main()
