"""The account API's typed bodies (``dexorder.contracts.accounts``): each request and
response round-trips through its JSON, a field missing or of the wrong type is a 400 that
names it, and the served endpoints answer in the shapes the contracts say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dexorder.contracts import accounts as c
from dexorder.json_input import decode_json
from gateway.platform_calls import platform_token
from gateway.telegram import check_login_widget, parse_update
from tests.gateway.served import Served, gateway_settings, serve_gateway

ACCOUNT = c.Account(id="u0123456789abcdef", email="a@example.com", tier="free", created_at=1)

REQUESTS: list[c.Body] = [
    c.Credentials(email="a@example.com", password="correct horse battery"),
    c.RefreshRequest(refresh_token="r"),
    c.LogoutRequest(refresh_token="r"),
    c.LogoutRequest(),
    c.TokenRequest(name="claude", ttl_days=30),
    c.TokenRequest(name="claude"),
    c.TelegramLogin(id=42, auth_date=1_000_000, hash="ab", first_name="Alice"),
    c.AgentRequest(user="u0123456789abcdef"),
]

RESPONSES: list[c.Body] = [
    c.SessionAnswer(
        account=ACCOUNT, access_token="a", refresh_token="r", expires_in=900, token_type="Bearer"
    ),
    c.MeAnswer(
        account=ACCOUNT,
        llm_tokens_this_month=12,
        llm_cost_this_month_usd=0.0,
        llm_budget_usd=None,
        requests_per_minute=20,
        agent="running",
        telegram_linked=False,
    ),
    c.AccountDeleted(deleted="u0123456789abcdef", knowledge_vectors=3),
    c.TokenList(
        tokens=[
            c.TokenInfo(
                id="j",
                name="n",
                created_at=1,
                expires_at=None,
                revoked=True,
                kind="pat",
                scope=None,
                last_used_at=None,
            )
        ]
    ),
    c.TokenCreated(
        token="t",
        id="j",
        name="n",
        created_at=1,
        expires_at=2,
        revoked=False,
        kind="pat",
        scope=None,
        last_used_at=None,
    ),
    c.LinkCode(code="ABCD1234", send_to_bot="/link ABCD1234", expires_in=600),
    c.AgentAddress(user="u0123456789abcdef", mcp_url="http://127.0.0.1:1/mcp"),
    c.Delivered(delivered="evt-1"),
]


@pytest.mark.parametrize("body", REQUESTS, ids=lambda b: type(b).__name__)
def test_each_request_round_trips_through_the_json_input_rules(body: c.Body) -> None:
    assert c.request(decode_json(c.encode(body)), type(body)) == body


@pytest.mark.parametrize("body", RESPONSES, ids=lambda b: type(b).__name__)
def test_each_response_round_trips(body: c.Body) -> None:
    assert msgspec.json.decode(c.encode(body), type=type(body)) == body


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (c.Credentials, {"password": "x"}, "'email' is required (a string)"),
        (c.Credentials, {"email": 7, "password": "x"}, "'email' is required (a string)"),
        (c.RefreshRequest, {"refresh_token": ["r"]}, "'refresh_token' is required (a string)"),
        (c.LogoutRequest, {"refresh_token": 1}, "'refresh_token' must be a string or null"),
        (c.TokenRequest, {"name": "n", "ttl_days": "30"}, "'ttl_days' must be a whole number"),
        (c.TokenRequest, {"name": "n", "ttl_days": True}, "'ttl_days' must be a whole number"),
        (c.TelegramLogin, {"id": "42", "hash": "ab"}, "'id' must be a whole number"),
        (c.AgentRequest, {"user": None}, "'user' is required (a string)"),
    ],
)
def test_a_missing_or_wrong_typed_field_is_named(
    kind: type[c.Body], value: dict[str, Any], message: str
) -> None:
    with pytest.raises(c.BadRequest) as exc:
        c.request(value, kind)
    assert message in str(exc.value)
    assert exc.value.field == message.split("'")[1]


def test_unknown_fields_are_ignored() -> None:
    """A newer client's extra fields are no error (the wire stays open to additions)."""
    given = {"email": "a@example.com", "password": "pw", "remember_me": True}
    assert c.request(given, c.Credentials) == c.Credentials(email="a@example.com", password="pw")


def test_telegram_updates_read_only_text_messages_and_never_fail() -> None:
    update = {
        "update_id": 9,
        "message": {
            "message_id": 1,
            "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "is_bot": False, "first_name": "\u202eecilA"},
            "text": "hi",
        },
    }
    msg = parse_update(update)
    assert msg is not None and (msg.update_id, msg.chat_id, msg.user_id, msg.text) == (
        9,
        5,
        5,
        "hi",
    )
    for ignored in (
        {"update_id": 9, "edited_message": update["message"]},
        {"update_id": 9, "message": {"chat": {"id": 5}, "photo": []}},  # no text
        {"update_id": 9, "channel_post": {"chat": {"id": 5}, "text": "hi"}},
        {"update_id": "nine", "message": update["message"]},
        {"message": update["message"]},
        [update],
    ):
        assert parse_update(ignored) is None, ignored


def test_a_wrong_typed_login_widget_field_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'auth_date' must be a whole number"):
        check_login_widget({"id": 1, "auth_date": "soon", "hash": "ab"}, "123:bot")


# --- over HTTP ------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


async def test_the_endpoints_answer_in_their_contract_shapes(served: Served) -> None:
    s = served
    session = c.request(await s.sign_up("shape@example.com"), c.SessionAnswer)
    status, body = await s.post(
        "/api/auth/login", {"email": "shape@example.com", "password": "correct horse battery"}
    )
    assert status == 200 and c.request(body, c.SessionAnswer).account == session.account
    status, body = await s.post("/api/auth/refresh", {"refresh_token": session.refresh_token})
    assert status == 200
    session = c.request(body, c.SessionAnswer)
    token = session.access_token

    status, body = await s.get("/api/me", token)
    me = c.request(body, c.MeAnswer)
    assert status == 200 and me.account == session.account and not me.telegram_linked
    status, body = await s.post("/api/tokens", {"name": "claude", "ttl_days": 7}, token)
    assert status == 201 and c.request(body, c.TokenCreated).name == "claude"
    status, body = await s.get("/api/tokens", token)
    assert status == 200 and [t.name for t in c.request(body, c.TokenList).tokens] == ["claude"]

    status, body = await s.delete("/api/me", token)
    assert status == 200 and c.request(body, c.AccountDeleted).deleted == session.account.id


async def test_wrong_typed_fields_are_400s_naming_them(served: Served) -> None:
    s = served
    token = (await s.sign_up("typed@example.com"))["access_token"]
    platform = platform_token(s.gw.keys)
    for path, body, auth, named in [
        ("/api/auth/signup", {"email": ["a@b.co"], "password": "x" * 12}, None, "'email'"),
        ("/api/auth/login", {"email": "a@b.co"}, None, "'password'"),
        ("/api/auth/refresh", {"refresh_token": 5}, None, "'refresh_token'"),
        ("/api/auth/logout", {"refresh_token": {}}, token, "'refresh_token'"),
        ("/api/tokens", {"name": 3}, token, "'name'"),
        ("/api/tokens", {"name": "n", "ttl_days": "7"}, token, "'ttl_days'"),
        ("/internal/agent", {"user": 1}, platform, "'user'"),
        ("/api/auth/telegram", {"id": "42", "hash": "ab"}, None, "'id'"),
    ]:
        status, answer = await s.post(path, body, auth)
        assert status == 400 and named in answer["error"], (path, answer)
