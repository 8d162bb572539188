"""``dexorder status``: do ticks still reach the stream runner? (freshness, not liveness)

Every part can answer its health check while no tick of a ticker gets
through: a hung broker still accepts connections, a consumer can wait for
offsets a recreated topic will never reach. So status also compares what the
ingestors handed to Kafka with what the stream runner took
(:func:`dexorder.health.stale_tickers`), and is unhealthy while a ticker whose
exchange keeps trading has had no tick taken for ``market_data.stale_after_s``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import msgspec

from dexorder.health import IngestorFeed, StreamFeed, stale_tickers

#: Shown as the address of the freshness row.
ADDRESS = "ingestors -> Kafka -> stream"


def _feed(url: str, timeout_s: float) -> object | None:
    """The ``feed`` of a part's ``/healthz`` (also when it answers 503); None if unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, urllib.error.URLError):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("feed") if isinstance(data, dict) else None


def check(
    parts: Sequence[dict[str, object]], stale_after_s: float, timeout_s: float = 1.0
) -> tuple[bool, str] | None:
    """(healthy, detail) of market data flow; None when there is nothing to compare.

    The ingestors are asked first: a batch of trades they just handed over has
    then had the most time to reach the stream runner when it is asked.
    """
    ingestors: list[IngestorFeed] = []
    stream_url = None
    for part in parts:
        name, probe = str(part.get("name")), str(part.get("probe"))
        if name.startswith("ingestor-"):
            raw = _feed(probe, timeout_s)
            if raw is not None:
                try:
                    ingestors.append(msgspec.convert(raw, IngestorFeed))
                except msgspec.ValidationError:
                    continue
        elif name == "stream":
            stream_url = probe
    if stream_url is None or not ingestors:
        return None
    raw = _feed(stream_url, timeout_s)
    if raw is None:
        return None  # the stream's own row already says it is down
    try:
        stream = msgspec.convert(raw, StreamFeed)
    except msgspec.ValidationError:
        return None
    stale = stale_tickers(ingestors, stream, int(stale_after_s * 1000))
    if stale:
        worst = ", ".join(
            f"{t} ({ms / 1000:.0f}s)" for t, ms in sorted(stale.items(), key=lambda kv: -kv[1])
        )
        return False, (
            f"stale: no tick reached the stream runner although its exchange kept trading: {worst}"
        )
    trading = {t for f in ingestors for t in f.trades_ms}
    if not trading:
        return True, "no trades at the exchanges yet"
    return True, f"ticks reach the stream runner ({len(trading)} tickers traded)"
