"""The CloudEvents functions answer bad event data, signed by the platform, with a clear
400 (never a 500): each reads its event type with dexorder/contracts/events.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from dexorder.record_signing import EXTENSION, record_keys, sign
from gateway.platform_calls import platform_token
from tests.gateway.served import Served, gateway_settings, serve_gateway

pytestmark = pytest.mark.integration

BACKFILL = {"ticker": "BINANCE:BTC/USDT", "timeframe": "1h", "start": 1, "end": 2}
#: (function, topic, data): each signed by the platform, each not its event type
MALFORMED: list[tuple[str, str, object]] = [
    ("notification-fanout", "notifications", {"user": "u", "kind": "alert"}),
    ("notification-fanout", "notifications", ["a", "list"]),
    ("notification-fanout", "notifications", {"event_id": "e\u202e", "user": "u", "kind": "a"}),
    ("backfill-dispatch", "backfill.requests", {**BACKFILL, "ticker": "NOPE"}),
    ("backfill-dispatch", "backfill.requests", {**BACKFILL, "start": "soon"}),
    ("backfill-dispatch", "backfill.requests", {**BACKFILL, "timeframe": "1h\u0000"}),
    ("backfill-dispatch", "backfill.requests", "just text"),
]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


async def test_signed_but_malformed_event_data_is_a_400(served: Served) -> None:
    keys = record_keys(served.gw.cfg)
    auth = {"Authorization": f"Bearer {platform_token(served.gw.keys)}"}
    async with aiohttp.ClientSession() as http:
        for function, topic, data in MALFORMED:
            attrs = {
                "type": "dev.knative.kafka.event",
                "source": f"/kafkasources/x#{topic}",
                EXTENSION: sign(keys, topic, data),
            }
            headers, body = to_binary(CloudEvent(attrs, data))
            async with http.post(
                f"{served.url}/functions/{function}/", data=body, headers={**headers, **auth}
            ) as r:
                assert r.status == 400, (function, data, await r.text())


async def test_the_tool_proxy_answers_a_malformed_call_with_a_400(served: Served) -> None:
    auth = {"Authorization": f"Bearer {platform_token(served.gw.keys)}"}
    bad: list[object] = [
        {"token": "t"},  # no tool
        {"token": "t", "tool": "x", "arguments": [1]},
        {"token": "t", "tool": "x\u202e"},
        "not an object",
    ]
    async with aiohttp.ClientSession() as http:
        for data in bad:
            headers, body = to_binary(
                CloudEvent({"type": "dexorder.tool.call", "source": "/test"}, data)
            )
            async with http.post(
                f"{served.url}/functions/tool-proxy/", data=body, headers={**headers, **auth}
            ) as r:
                assert r.status == 400, (data, await r.text())
        # deep nesting in the body itself: refused, not a RecursionError
        headers, _ = to_binary(CloudEvent({"type": "dexorder.tool.call", "source": "/t"}, {}))
        async with http.post(
            f"{served.url}/functions/tool-proxy/",
            data=b"[" * 100_000 + b"]" * 100_000,
            headers={**headers, **auth},
        ) as r:
            assert r.status == 400, await r.text()
