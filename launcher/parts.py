"""Which processes make up the platform on one machine, and how to probe each."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from dexorder.config import Settings, tcp_address
from launcher.broker import broker_command


@dataclass(frozen=True)
class Part:
    """One process of the platform."""

    name: str
    argv: list[str]
    #: where it listens, as shown to people
    address: str
    #: ``http://…`` answering 200 when healthy, or ``tcp://host:port`` to connect to
    probe: str
    #: Restarting it loses its data (the in-memory broker), so the parts that
    #: name it in ``uses`` are restarted with it and set up again from scratch.
    loses_data_on_restart: bool = False
    #: Parts it needs.
    uses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def plan(cfg: Settings) -> list[Part]:
    """The parts ``dexorder up`` starts, in start order."""
    parts: list[Part] = []
    if not cfg.kafka.bootstrap_servers:
        port = cfg.kafka.embedded_port
        parts.append(
            Part(
                "kafka",
                broker_command(port),
                f"127.0.0.1:{port} (Tansu, in memory)",
                tcp_address("127.0.0.1", port),
                loses_data_on_restart=True,
            )
        )
    if any(ex.emulated for ex in cfg.exchanges):
        em = cfg.emulator
        parts.append(
            Part(
                "exchange-emulator",
                _py("services.exchange_emulator"),
                f"http://{em.host}:{em.port} (Binance spot API)",
                f"http://{em.host}:{em.port}/api/v3/ping",
            )
        )
    r = cfg.relay
    parts.append(
        Part(
            "relay",
            _py("services.relay"),
            f"router {r.router_address}, work {r.work_address}, "
            f"xsub {r.xsub_address}, xpub {r.xpub_address}",
            f"http://127.0.0.1:{r.health_port}/healthz",
        )
    )
    for ex in cfg.exchanges:
        parts.append(
            Part(
                f"ingestor-{ex.name.lower()}",
                _py("services.ingestor", "--exchange", ex.name),
                f"{ex.name} via CCXT {ex.ccxt_id}{' (emulated)' if ex.emulated else ''}, "
                f"health http://127.0.0.1:{ex.health_port}/healthz",
                f"http://127.0.0.1:{ex.health_port}/healthz",
                uses=("kafka", "relay", "exchange-emulator"),
            )
        )
    e = cfg.embedder
    if e.enabled:
        parts.append(
            Part(
                "embedder",
                _py("services.embedder"),
                f"{e.url} (all-MiniLM-L6-v2 sentence embeddings)",
                f"{e.url}/healthz",
            )
        )
    parts.append(
        Part(
            "lake-writer",
            _py("streaming.lake_writer"),
            f"Kafka -> Iceberg market.ohlc, health http://127.0.0.1:{cfg.writer.health_port}/healthz",
            f"http://127.0.0.1:{cfg.writer.health_port}/healthz",
            uses=("kafka", "relay"),
        )
    )
    parts.append(
        Part(
            "stream",
            _py("streaming"),
            f"market.ticks -> candles, health http://127.0.0.1:{cfg.stream.health_port}/healthz",
            f"http://127.0.0.1:{cfg.stream.health_port}/healthz",
            # not "kafka": the runner reads topics created again from their beginning
            # itself (streaming/offsets.py), and a restart on top of that only stopped
            # live candles while a new process restored its checkpoint
            uses=("relay",),
        )
    )
    g = cfg.gateway
    if g.enabled:
        parts.append(
            Part(
                "gateway",
                _py("gateway"),
                f"{g.url} (web chat, API, Telegram webhook), "
                f"agent events {tcp_address(g.host, g.events_port)}",
                f"{g.url}/healthz",
            )
        )
        parts.append(
            Part(
                "triggers",
                _py("triggers"),
                "Kafka notifications, backfill.requests, tool.calls -> the gateway's functions, "
                f"health http://127.0.0.1:{g.triggers_health_port}/healthz",
                f"http://127.0.0.1:{g.triggers_health_port}/healthz",
                uses=("kafka", "gateway"),
            )
        )
    return parts


def probe(target: str, timeout_s: float = 1.0) -> tuple[bool, str]:
    """Check one part; return (healthy, a short detail for people)."""
    if target.startswith("tcp://"):
        host, _, port = target[len("tcp://") :].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True, "accepting connections"
        except OSError as exc:
            return False, f"not reachable: {exc.strerror or exc}"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            body = resp.read(4096)
            return True, _summary(body)
    except urllib.error.HTTPError as exc:
        return False, f"unhealthy (HTTP {exc.code}): {_summary(exc.read(4096))}"
    except (OSError, urllib.error.URLError) as exc:
        return False, f"not reachable: {getattr(exc, 'reason', exc)}"


def _summary(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "ok"
    if not isinstance(data, dict):
        return "ok"
    keys = [k for k in data if k not in ("part", "healthy")]
    return ", ".join(f"{k}={data[k]}" for k in keys[:6]) or "ok"
