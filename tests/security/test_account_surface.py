"""The account surface: what one ordinary client (or a script) can try at the gateway's
doors — guessing passwords, link codes and who has an account, using a leaked token for
more than it was for, holding on to a stolen session, and sending bytes that break the
decoder — and what stops it.

One gateway (real HTTP and WebSocket server, real accounts database) serves the module;
each test gets fresh throttle counts on a clock it moves, so no test sleeps. Client
addresses are given as ``X-Forwarded-For`` from loopback, which uvicorn honours from its
trusted proxy address (127.0.0.1) as it does behind the cluster's ingress.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web

from dexorder.config import AuthLimitsConfig, ConfigError, GatewayConfig, Settings
from dexorder.tokens import AUDIENCE, embedder_token, mint_token, new_keys
from gateway.limits import MemoryCounter
from gateway.throttle import AuthPolicies, Throttle
from services.embedder.server import Embedder
from tests.gateway.loopback_telegram import BOT_TOKEN, BotApiServer, serve_bot_api, update
from tests.gateway.served import Served, gateway_settings, serve_app, serve_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SECRET = "webhook-secret-0123456789"
PASSWORD = "correct horse battery"


class Site:
    """The served gateway and the Telegram loopback behind it."""

    def __init__(self, served: Served, bot: BotApiServer) -> None:
        self.s, self.bot = served, bot

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        address: str = "198.51.100.1",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {**(headers or {}), "X-Forwarded-For": address}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.s.http.request(method, self.s.url + path, data=data, headers=headers) as r:
            text = await r.text()
            return (
                r.status,
                json.loads(text) if text else None,
                {k.lower(): v for k, v in r.headers.items()},
            )

    async def login(
        self, email: str, password: str = PASSWORD, address: str = "198.51.100.1"
    ) -> tuple[int, Any, dict[str, str]]:
        return await self.call(
            "POST", "/api/auth/login", {"email": email, "password": password}, address=address
        )

    async def sign_up(self, email: str, address: str = "198.51.100.200") -> dict[str, Any]:
        status, body, _ = await self.call(
            "POST", "/api/auth/signup", {"email": email, "password": PASSWORD}, address=address
        )
        assert status == 201, body
        return dict(body)

    async def hook(self, update_id: int, user: int, text: str, name: str = "Alice") -> str:
        """Send the bot one message and return its reply."""
        before = len(self.bot.sent())
        body = update(update_id, user, text)
        body["message"]["from"]["first_name"] = name
        status, _, _ = await self.call(
            "POST",
            "/telegram/webhook",
            raw=json.dumps(body).encode(),
            address="149.154.167.1",
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        assert status == 200
        replies = await self.bot.wait_for("sendMessage", before + 1)
        return str(replies[before]["text"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    async with serve_bot_api() as (url, bot):
        cfg = gateway_settings(
            tmp_path_factory.mktemp("account-surface") / "home",
            telegram_bot_token=BOT_TOKEN,
            telegram_webhook_secret=SECRET,
            telegram_api_url=url,
            max_token_ttl_days=30,
        )
        async with serve_gateway(cfg) as served:
            yield Site(served, bot)


@pytest.fixture
def clock() -> list[float]:
    return [1_800_000_000.0]


def throttle(site: Site, clock: list[float], **limits: Any) -> Throttle:
    """Fresh counts under ``limits`` on the test's clock, for the served gateway."""
    t = Throttle(
        MemoryCounter(clock=lambda: clock[0]),
        AuthPolicies.from_config(AuthLimitsConfig(**limits)),
        clock=lambda: clock[0],
    )
    site.s.gw.throttle = t
    return t


@pytest.fixture(autouse=True)
def lenient(site: Site, clock: list[float]) -> Iterator[None]:
    """Generous limits unless a test sets its own (so sign-ups in setup are not throttled)."""
    throttle(site, clock, signups_per_hour=1000, address_lockout_failures=1000)
    yield


# --- guessing passwords and who has an account -----------------------------------------


async def test_an_account_is_locked_after_n_failures_and_says_nothing_of_whether_it_exists(
    site: Site, clock: list[float]
) -> None:
    """Stops online password guessing against one account (from any number of addresses),
    and account enumeration by comparing answers: wrong password, no such account and a
    locked account answer alike; the lockout holds even for the right password."""
    await site.sign_up("lock@example.com")
    throttle(site, clock, free_failures=10, account_lockout_failures=3, lockout_s=600)
    wrong = [
        await site.login("lock@example.com", "wrong password!", f"203.0.113.{i}") for i in range(3)
    ]
    nobody = [
        await site.login("nobody@example.com", "wrong password!", f"203.0.113.{i}")
        for i in range(3)
    ]
    assert {(s, json.dumps(b)) for s, b, _ in wrong + nobody} == {
        (401, json.dumps({"error": "wrong email or password"}))
    }

    locked = await site.login("lock@example.com", PASSWORD, "192.0.2.77")
    absent = await site.login("nobody@example.com", PASSWORD, "192.0.2.78")
    assert locked[0] == absent[0] == 429
    assert locked[1] == absent[1] and locked[2]["retry-after"] == absent[2]["retry-after"] == "600"

    clock[0] += 601
    status, body, _ = await site.login("lock@example.com", PASSWORD, "192.0.2.77")
    assert status == 200 and body["account"]["email"] == "lock@example.com"


async def test_failures_back_off_exponentially_and_a_success_forgets_them(
    site: Site, clock: list[float]
) -> None:
    """Stops rapid-fire guessing below the lockout: after the free failures each further
    failure doubles the wait (Retry-After says how long), timed by the gateway's clock."""
    await site.sign_up("backoff@example.com")
    throttle(site, clock, free_failures=2, backoff_base_s=2, account_lockout_failures=50)
    addresses = (f"203.0.113.{i}" for i in range(100, 200))  # each from its own address

    async def login(password: str) -> tuple[int, Any, dict[str, str]]:
        return await site.login("backoff@example.com", password, next(addresses))

    for expected_wait in (0, 0, 2, 4, 8, 16):  # failures 1 and 2 are free
        assert (await login("wrong password!"))[0] == 401
        if not expected_wait:
            continue
        # even the right password waits, and the wait is not counted as a failure
        status, _, headers = await login(PASSWORD)
        assert status == 429 and headers["retry-after"] == str(expected_wait)
        clock[0] += expected_wait - 1
        assert (await login(PASSWORD))[0] == 429  # not yet
        clock[0] += 1

    assert (await login(PASSWORD))[0] == 200
    # the success forgot the account's failures: a typo now costs nothing
    assert (await login("wrong password!"))[0] == 401
    assert (await login(PASSWORD))[0] == 200


async def test_one_address_guessing_across_many_accounts_is_throttled(
    site: Site, clock: list[float]
) -> None:
    """Stops password spraying (one guess per account over many accounts) and email
    enumeration from one client address; other addresses are not affected."""
    throttle(site, clock, free_failures=100, address_lockout_failures=5, lockout_s=900)
    for i in range(5):
        status, _, _ = await site.login(f"spray{i}@example.com", "Summer2026!!", "203.0.113.50")
        assert status == 401
    status, _, headers = await site.login("spray9@example.com", "Summer2026!!", "203.0.113.50")
    assert status == 429 and headers["retry-after"] == "900"
    # the same /64 of IPv6 is one address; another /64 is not
    for i in range(5):
        await site.login(f"v6spray{i}@example.com", "Summer2026!!", f"2001:db8:1:2::{i + 1}")
    assert (await site.login("v6@example.com", "x" * 12, "2001:db8:1:2::ff"))[0] == 429
    assert (await site.login("v6@example.com", "x" * 12, "2001:db8:1:3::1"))[0] == 401
    assert (await site.login("spray9@example.com", "Summer2026!!", "203.0.113.51"))[0] == 401


async def test_sign_ups_are_limited_per_client_address(site: Site, clock: list[float]) -> None:
    """Stops mass account creation (and sign-up email probing) from one address."""
    throttle(site, clock, signups_per_hour=2)
    for i in range(2):
        await site.sign_up(f"mass{i}@example.com", address="203.0.113.80")
    status, body, headers = await site.call(
        "POST",
        "/api/auth/signup",
        {"email": "mass2@example.com", "password": PASSWORD},
        address="203.0.113.80",
    )
    assert status == 429 and int(headers["retry-after"]) > 0, body
    await site.sign_up("mass2@example.com", address="203.0.113.81")


async def test_telegram_link_codes_cannot_be_guessed_from_a_chat(
    site: Site, clock: list[float]
) -> None:
    """Stops brute-forcing the 8-character /link codes through the bot: after a few wrong
    codes a chat is locked out, even for a right code; another chat is not."""
    alice = await site.sign_up("tg@example.com")
    status, body, _ = await site.call(
        "POST", "/api/telegram/link-code", token=alice["access_token"]
    )
    assert status == 200
    throttle(site, clock, free_failures=10, link_lockout_failures=3, lockout_s=900)
    for i in range(3):
        assert "Linking failed" in await site.hook(100 + i, 5550001, f"/link {i:08X}")
    refused = await site.hook(110, 5550001, f"/link {body['code']}")
    assert "Too many link attempts" in refused and "15 min" in refused
    # a sender's name may hold anything (bidi controls too): the update is still read
    assert "Linked to tg@example.com" in await site.hook(
        111, 5550002, f"/link {body['code']}", name="\u202eecilA"
    )
    # but message text with a bidi override is refused with a reply, not a 400 that
    # Telegram would re-send forever
    assert "Message refused" in await site.hook(112, 5550002, "buy \u202e001 CTB")


# --- using a token for more than it is for ----------------------------------------------


async def test_a_personal_access_token_cannot_mint_tokens_or_delete_the_account(
    site: Site,
) -> None:
    """Stops a leaked personal access token (from an MCP client's config file) from
    making itself permanent (new tokens, Telegram links) or destroying the account."""
    alice = await site.sign_up("pat@example.com")
    session = alice["access_token"]
    status, made, _ = await site.call(
        "POST", "/api/tokens", {"name": "claude", "ttl_days": 7}, session
    )
    assert status == 201
    pat = made["token"]
    assert (await site.call("GET", "/api/me", token=pat))[0] == 200  # it works for its job

    for method, path, body in [
        ("POST", "/api/tokens", {"name": "mine now", "ttl_days": 30}),
        ("POST", "/api/telegram/link-code", None),
        ("DELETE", "/api/me", None),
    ]:
        status, answer, _ = await site.call(method, path, body, pat)
        assert status == 403, (path, answer)
        assert "only a login session" in answer["error"]
    status, me, _ = await site.call("GET", "/api/me", token=session)
    assert status == 200 and me["account"]["email"] == "pat@example.com"
    assert len((await site.call("GET", "/api/tokens", token=session))[1]["tokens"]) == 1


async def test_every_token_expires_within_the_configured_maximum(site: Site) -> None:
    """Stops tokens that live forever (a leak that can never age out): a personal access
    token without expiry or beyond ``max_token_ttl_days`` is refused when asked for, and
    one made some other way is refused when used."""
    alice = await site.sign_up("ttl@example.com")
    session = alice["access_token"]
    for days in (None, 31, 3650, True):
        status, body, _ = await site.call(
            "POST", "/api/tokens", {"name": "n", "ttl_days": days}, session
        )
        assert status == 400 and "from 1 to 30" in body["error"], (days, body)
    status, made, _ = await site.call("POST", "/api/tokens", {"name": "default"}, session)
    assert status == 201 and made["expires_at"] <= time.time() + 30 * 86_400 + 5

    keys = site.s.gw.keys
    user = alice["account"]["id"]
    claims = {"sub": user, "kind": "pat", "jti": "x", "iat": int(time.time()), "aud": AUDIENCE}
    assert keys.private_pem is not None  # the gateway makes tokens
    no_expiry = jwt.encode(claims, keys.private_pem, algorithm="EdDSA")
    status, body, _ = await site.call("GET", "/api/me", token=no_expiry)
    assert status == 401  # no expiry: not a token of ours at all
    ten_years = mint_token(keys, user, "pat", 3650 * 86_400)
    status, body, _ = await site.call("GET", "/api/me", token=ten_years)
    assert status == 401 and "maximum of 30 days" in body["error"]
    assert (await site.call("GET", "/api/me", token=mint_token(keys, user, "pat", 86_400)))[
        0
    ] == 200

    with pytest.raises((ConfigError, ValueError), match="max_token_ttl_days"):
        GatewayConfig(refresh_ttl_days=60, max_token_ttl_days=30)


async def test_reusing_a_retired_refresh_token_ends_the_logins_access_tokens(
    site: Site,
) -> None:
    """Stops a thief who copied a refresh token: when either party uses it after the
    other did, the whole login ends at once — its access tokens too, not 15 min later."""
    await site.sign_up("refresh@example.com")
    _, first, _ = await site.login("refresh@example.com")
    _, other, _ = await site.login("refresh@example.com")  # another device's login
    status, second, _ = await site.call(
        "POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 200
    assert (await site.call("GET", "/api/me", token=second["access_token"]))[0] == 200

    status, body, _ = await site.call(
        "POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 401 and "reused" in body["error"]
    for access in (first["access_token"], second["access_token"]):
        status, body, _ = await site.call("GET", "/api/me", token=access)
        assert status == 401 and "revoked" in body["error"]
    assert (await site.call("GET", "/api/me", token=other["access_token"]))[0] == 200


async def test_the_embedder_takes_platform_tokens_only(tmp_path: Path) -> None:
    """Stops a person (with a personal access token, or their agent's service token read
    by their code) from using the shared embedding service: spending its CPU, or timing
    its cache of recent texts to learn what other people's agents embedded."""
    keys = new_keys()
    embedder = Embedder(keys)  # the model is not loaded: an admitted call gets 503
    app = web.Application()
    app.router.add_post("/embed", embedder.embed)
    cfg = Settings(home=tmp_path, agent={"token_private_key": keys.private_pem})
    from agent.person import PersonAgent

    agent_token = PersonAgent(cfg, "alice").embedder_token()
    async with serve_app(app) as url, aiohttp.ClientSession() as http:

        async def embed(token: str, raw: bytes = b'{"texts": ["hello"]}') -> tuple[int, Any]:
            async with http.post(
                url + "/embed", data=raw, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                return r.status, await r.json()

        for person_token in (
            mint_token(keys, "alice", "pat", 3600),
            mint_token(keys, "alice", "service", 300),  # what an agent calls agents with
        ):
            status, body = await embed(person_token)
            assert status == 401 and "platform token" in body["error"]
        assert (await embed(embedder_token(keys, "gateway")))[0] == 503
        assert (await embed(agent_token))[0] == 503  # agents still embed, with their own kind
        status, body = await embed(embedder_token(keys, "gateway"), b"[" * 100_000)
        assert status == 400 and "nested" in body["error"]
        status, _ = await embed(embedder_token(keys, "gateway"), b'{"texts": ["\\ud800"]}')
        assert status == 400


# --- bytes that break decoders --------------------------------------------------------

HOSTILE_BODIES = {
    "deep nesting": b'{"email": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",  # 40 KB
    "NUL": b'{"email": "nul\\u0000@example.com", "password": "correct horse battery"}',
    "lone surrogate": b'{"email": "s@example.com", "password": "\\ud800correct horse"}',
    "bidi override": b'{"email": "moc.elpmaxe@\\u202eevil.com", "password": "correct horse b"}',
    "NaN": b'{"email": "nan@example.com", "password": "correct horse battery", "x": NaN}',
}


@pytest.mark.parametrize("path", ["/api/auth/signup", "/api/auth/login"])
@pytest.mark.parametrize("hostile", HOSTILE_BODIES)
async def test_hostile_json_bodies_get_a_400_never_a_500(
    site: Site, path: str, hostile: str
) -> None:
    """Stops crashing handlers (500s, tracebacks, a poisoned database row) and spoofed
    look-alike text with JSON every decoder accepts but nothing downstream can handle."""
    status, body, _ = await site.call("POST", path, raw=HOSTILE_BODIES[hostile])
    assert status == 400, body
    assert "refused" in body["error"]


async def test_hostile_websocket_frames_get_an_error_frame_and_the_socket_stays(
    site: Site,
) -> None:
    """Stops one malformed frame (binary, deep nesting, NUL, surrogate, bidi override)
    from crashing the chat socket's handler or reaching the agent and the model."""
    alice = await site.sign_up("ws@example.com")
    async with site.s.socket(alice["access_token"]) as sock:
        ws = sock.ws
        await ws.send_bytes(b"\x00\xffnot text")
        frame = await sock.next(10)
        assert frame["type"] == "error" and frame["status"] == 400 and "binary" in frame["text"]
        for raw in (
            "[" * 20_000,
            '{"type": "message", "text": "hi\\u0000"}',
            '{"type": "message", "text": "\\udc00"}',
            '{"type": "message", "text": "transfer \\u202e001 CTB"}',
        ):
            await ws.send_str(raw)
            frame = await sock.next(10)
            assert frame["type"] == "error" and frame["status"] == 400, frame
        await ws.send_str('{"type": "hello"}')  # still open and answering
        frame = await sock.next(10)
        assert frame["type"] == "error" and "expected" in frame["text"]

    # a binary frame in place of the auth message is answered too, then the socket closed
    async with site.s.http.ws_connect(site.s.url.replace("http", "ws") + "/api/chat/ws") as ws:
        await ws.send_bytes(b"\x01\x02")
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["status"] == 400
