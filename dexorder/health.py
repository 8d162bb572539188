"""A part's HTTP health and metrics endpoint (``/healthz`` and ``/metrics``).

``dexorder status`` reads ``/healthz``; Prometheus scrapes ``/metrics``.

Liveness is not enough for market data: a stream runner can be up and ready
while no tick of a ticker reaches it (a hung broker, a consumer waiting for
offsets a recreated topic will never reach). So the ingestors and the stream
runner also report, under ``feed`` in their ``/healthz``, when market data last
went through them, and :func:`stale_tickers` compares the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

#: Returns ``(healthy, details)``; details are shown by ``dexorder status``.
HealthCheck = Callable[[], tuple[bool, Mapping[str, object]]]


async def serve_health(host: str, port: int, part: str, check: HealthCheck) -> web.AppRunner:
    """Start the endpoint on ``host:port``; the caller cleans up the returned runner."""

    async def healthz(_: web.Request) -> web.Response:
        ok, details = check()
        return web.json_response(
            {"part": part, "healthy": ok, **details}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def counter_total(counter: Counter, **labels: str) -> int:
    """``counter``'s value summed over its label sets (those matching ``labels``)."""
    return int(
        sum(
            sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
            and all(sample.labels.get(k) == v for k, v in labels.items())
        )
    )


@dataclass(frozen=True)
class CounterReading:
    """One figure of a part's ``/healthz``: a counter, optionally one label set of it."""

    counter: Counter
    labels: dict[str, str] = field(default_factory=dict)


class PartCounters(Mapping[str, int]):
    """A part's figures for ``/healthz`` by name, read from its Prometheus counters.

    The counters are process-global. The platform runs each part in a process of
    its own, but tests and the benchmarks start several, one after another, in one
    process: so each figure counts from when this object was made (the part
    started), not from the start of the process.
    """

    def __init__(self, readings: Mapping[str, Counter | CounterReading]) -> None:
        self._readings = {
            name: r if isinstance(r, CounterReading) else CounterReading(r)
            for name, r in readings.items()
        }
        self._start = {name: self._total(r) for name, r in self._readings.items()}

    @staticmethod
    def _total(reading: CounterReading) -> int:
        return counter_total(reading.counter, **reading.labels)

    def __getitem__(self, name: str) -> int:
        return self._total(self._readings[name]) - self._start[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._readings)

    def __len__(self) -> int:
        return len(self._readings)


class IngestorFeed(msgspec.Struct):
    """An ingestor's side of market data flow (``feed`` in its ``/healthz``)."""

    #: ticker → wall-clock ms of the last two batches of exchange trades it handed
    #: to Kafka, (previous, last). Trades arriving prove the exchange is up.
    trades_ms: dict[str, tuple[int, int]] = {}


class StreamFeed(msgspec.Struct):
    """The stream runner's side of market data flow (``feed`` in its ``/healthz``)."""

    #: when this runner started (ms): it is not blamed for trades from before
    started_ms: int = 0
    #: ticker → wall-clock ms it last folded a tick of it (dropped ticks do not count)
    last_tick_ms: dict[str, int] = {}


def stale_tickers(
    ingestors: Iterable[IngestorFeed], stream: StreamFeed, stale_after_ms: int
) -> dict[str, int]:
    """Tickers the stream runner has missed ticks of: ticker → how long (ms).

    A ticker is stale when an ingestor handed over at least two batches of its
    trades after the runner last took one of its ticks, the last of them more
    than ``stale_after_ms`` later. Two batches, so that a single batch in
    flight after a quiet spell is not mistaken for a stall; a quiet market (no
    trades at the exchange) is never stale, nor is an exchange that is down.
    """
    out: dict[str, int] = {}
    for feed in ingestors:
        for ticker, (previous, last) in feed.trades_ms.items():
            took = max(stream.last_tick_ms.get(ticker, 0), stream.started_ms)
            behind = last - took
            if previous > took and behind > stale_after_ms:
                out[ticker] = max(out.get(ticker, 0), behind)
    return out
