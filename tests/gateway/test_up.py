"""The gateway and the trigger dispatcher as parts of `dexorder up`: chat through them with
`dexorder chat`, and a notification from Kafka reaching the person's open chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from dexorder.record_signing import record_keys, signed_record
from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform
from tests.gateway.served import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def up(tmp_path: Path) -> Iterator[RunningPlatform]:
    env = ephemeral_env(tmp_path / "home", DEXORDER_GATEWAY__ENABLED="true")
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS",)):
        p = start_platform(env)
        try:
            yield p
        finally:
            p.stop()


async def test_chat_and_notifications_through_the_platform_dexorder_up_starts(
    up: RunningPlatform,
) -> None:
    names = {r.part.name for r in up.supervisor.running}
    assert {"gateway", "triggers"} <= names
    code, out, errs = await run_cli(up.env, "chat", "list my strategies")
    assert code == 0, errs
    assert "sma_cross" in out

    base = up.cfg.gateway.url
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/auth/signup", json={"email": "a@example.com", "password": "long enough pw"}
        ) as r:
            alice = await r.json()
        async with http.ws_connect(base.replace("http", "ws") + "/api/chat/ws") as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": alice["access_token"]}))
            assert json.loads((await ws.receive(timeout=30)).data)["type"] == "ready"
            producer = AIOKafkaProducer(bootstrap_servers=up.bootstrap)
            await producer.start()
            try:
                note = {
                    "event_id": "up-1",
                    "user": alice["account"]["id"],
                    "kind": "alert",
                    "payload": {"ticker": "BINANCE:ETH/USDT", "condition": "below", "price": 3000},
                }
                body = json.dumps(note).encode()  # as a platform part produces it: signed
                signature = signed_record(record_keys(up.cfg), "notifications", body)
                await producer.send_and_wait("notifications", body, headers=signature)
            finally:
                await producer.stop()
            frame = json.loads((await ws.receive(timeout=60)).data)
            assert frame["type"] == "event" and frame["event_id"] == "up-1"
