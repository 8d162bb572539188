"""Telegram: the webhook fed real update payloads, replies through a loopback Bot API,
linking by code, Login Widget signatures, and alerts delivered when no chat is open."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.platform_calls import platform_token
from gateway.telegram import BotApi, check_login_widget, split_message
from tests.agent.conftest import fill_lake
from tests.gateway.loopback_telegram import BOT_TOKEN, BotApiServer, serve_bot_api, update
from tests.gateway.served import Served, alert_event, gateway_settings, serve_gateway
from tests.gateway.test_isolation import send_event

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-0123456789"
ALICE_TG = 777000111


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[tuple[Served, BotApiServer]]:
    async with serve_bot_api() as (url, api):
        cfg = gateway_settings(
            tmp_path / "home",
            telegram_bot_token=BOT_TOKEN,
            telegram_webhook_secret=SECRET,
            telegram_api_url=url,
        )
        fill_lake(cfg, days=10)
        async with serve_gateway(cfg) as s:
            yield s, api


async def hook(s: Served, body: dict[str, Any], secret: str | None = SECRET) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    status, _ = await s.post("/telegram/webhook", body, headers=headers)
    return status


def signed(fields: dict[str, Any], token: str = BOT_TOKEN) -> dict[str, Any]:
    data = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    key = hashlib.sha256(token.encode()).digest()
    return {**fields, "hash": hmac.new(key, data.encode(), hashlib.sha256).hexdigest()}


async def test_linking_chatting_and_charts_over_the_bot_api(
    bot: tuple[Served, BotApiServer],
) -> None:
    s, api = bot
    assert await hook(s, update(1, ALICE_TG, "/start"), secret=None) == 401
    assert await hook(s, update(1, ALICE_TG, "/start"), secret="wrong") == 401
    assert api.calls == []

    assert await hook(s, update(1, ALICE_TG, "/start")) == 200
    (greeting,) = await api.wait_for("sendMessage", 1)
    assert greeting["chat_id"] == ALICE_TG and "/link" in greeting["text"]

    alice = await s.sign_up("alice@example.com")
    status, body = await s.post("/api/telegram/link-code", token=alice["access_token"])
    assert status == 200
    await hook(s, update(2, ALICE_TG, "/link WRONGCODE"))
    await hook(s, update(3, ALICE_TG, f"/link {body['code']}"))
    failed, linked = (await api.wait_for("sendMessage", 3))[1:]
    assert "Linking failed" in failed["text"] and "Linked to alice@example.com" in linked["text"]

    await hook(s, update(4, ALICE_TG, "list my strategies"))
    await hook(s, update(4, ALICE_TG, "list my strategies"))  # Telegram re-sending it
    sent = await api.wait_for("sendMessage", 5)
    starting, reply = sent[3], sent[4]
    assert "Starting your agent" in starting["text"]
    assert reply["text"].startswith("[offline model]") and "sma_cross" in reply["text"]
    assert api.sent("sendChatAction")[0]["action"] == "typing"

    await hook(s, update(5, ALICE_TG, "candles of BTC on 1h from 2024-01-01 to 2024-01-05"))
    (photo,) = await api.wait_for("sendPhoto", 1)
    assert photo["caption"] == "BINANCE:BTC/USDT 1h" and photo["photo"].startswith(b"\x89PNG")
    assert int(photo["chat_id"]) == ALICE_TG
    assert len(api.sent()) == 6  # the duplicate update got no second answer

    # one conversation across channels: the web chat sees the same agent
    status, body = await s.post(
        "/api/chat", {"message": "list my strategies"}, token=alice["access_token"]
    )
    assert status == 200

    # group chats are not served
    await hook(s, update(6, ALICE_TG, "list my strategies", chat_id=-100200300))
    group = (await api.wait_for("sendMessage", 7))[6]
    assert group["chat_id"] == -100200300 and "private chat" in group["text"]


async def test_alerts_reach_telegram_when_no_chat_is_open(bot: tuple[Served, BotApiServer]) -> None:
    s, api = bot
    alice = await s.sign_up("alice@example.com")
    a_id = alice["account"]["id"]
    went = {"ticker": "BINANCE:SOL/USDT", "condition": "above", "price": 1, "triggered_price": 2}
    away = {"event_id": "n-0", "user": a_id, "kind": "alert", "payload": went}
    status, _ = await s.post("/internal/notify", away, token=platform_token(s.gw.keys))
    assert status == 202  # no channel yet: held for her
    _, body = await s.post("/api/telegram/link-code", token=alice["access_token"])
    await hook(s, update(1, ALICE_TG, f"/link {body['code']}"))
    linked, held = await api.wait_for("sendMessage", 2)  # linking brings what was held
    assert "Linked to" in linked["text"] and "SOL/USDT went above 1" in held["text"]

    event = alert_event(
        s.gw,
        a_id,
        "alert-1",
        ticker="BINANCE:BTC/USDT",
        condition="below",
        price=60000,
        triggered_price=59990,
    )
    await send_event(s.gw.events.endpoint, event)
    sent = await api.wait_for("sendMessage", 3)
    assert sent[2]["chat_id"] == ALICE_TG and "went below 60000" in sent[2]["text"]

    async with s.socket(alice["access_token"]) as ws:  # with a chat open, it goes there
        event2 = alert_event(
            s.gw,
            a_id,
            "alert-2",
            ticker="BINANCE:ETH/USDT",
            condition="above",
            price=4000,
            triggered_price=4001,
        )
        await send_event(s.gw.events.endpoint, event2)
        frame = await ws.until("event")
        assert frame["event_id"] == "alert-2"
    assert len(api.sent()) == 3


async def test_login_widget_signatures(bot: tuple[Served, BotApiServer]) -> None:
    s, api = bot
    now = int(time.time())
    fields = {"id": ALICE_TG, "first_name": "Alice", "username": "alice", "auth_date": now}
    status, body = await s.post("/api/auth/telegram", signed(fields))
    assert status == 404 and "not linked" in body["error"]

    alice = await s.sign_up("alice@example.com")
    _, code = await s.post("/api/telegram/link-code", token=alice["access_token"])
    await hook(s, update(1, ALICE_TG, f"/link {code['code']}"))
    await api.wait_for("sendMessage", 1)

    status, body = await s.post("/api/auth/telegram", signed(fields))
    assert status == 200 and body["account"]["email"] == "alice@example.com"
    assert (await s.get("/api/me", token=body["access_token"]))[1]["telegram_linked"] is True

    forged = {**signed(fields), "id": 999}  # someone else's id under alice's signature
    status, body = await s.post("/api/auth/telegram", forged)
    assert status == 401 and "not signed by Telegram" in body["error"]
    other_bot = signed(fields, token="654321:another-bot")
    assert (await s.post("/api/auth/telegram", other_bot))[0] == 401
    old = signed({**fields, "auth_date": now - 2 * 86_400})
    status, body = await s.post("/api/auth/telegram", old)
    assert status == 401 and "too old" in body["error"]
    assert (await s.post("/api/auth/telegram", {"id": ALICE_TG}))[0] == 401


def test_check_login_widget_reads_the_id() -> None:
    fields = {"id": 42, "auth_date": 1_000_000, "first_name": "A"}
    assert check_login_widget(signed(fields), BOT_TOKEN, now=1_000_100) == 42


def test_long_messages_are_split_under_the_limit() -> None:
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(200))
    pieces = split_message(text)
    assert len(pieces) > 1 and all(len(p) <= 4096 for p in pieces)
    assert "\n".join(pieces) == text
    word = "y" * 10_000  # no place to cut: cut hard
    assert [len(p) for p in split_message(word)] == [4096, 4096, 1808]


async def test_the_bot_api_client_splits_what_it_sends() -> None:
    async with serve_bot_api() as (url, api):
        client = BotApi(BOT_TOKEN, url)
        try:
            assert await client.send_text(5, "word " * 2000) == 3
        finally:
            await client.close()
    assert [len(p["text"]) <= 4096 for p in api.sent()] == [True, True, True]
