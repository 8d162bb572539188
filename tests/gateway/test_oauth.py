"""OAuth 2.1 for MCP clients, end to end over HTTP (httpx) against a served gateway on
SQLite and on PostgreSQL: discovery, dynamic client registration, the login + consent
page, the code with PKCE, tokens the gateway takes as the person's, refresh, listing and
revoking them with the person's other tokens, and everything refused that should be."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.types import TextContent
from pydantic import AnyUrl
from sqlalchemy import Engine

from gateway.accounts.oauth_store import OAuthStore
from gateway.accounts.store import Accounts
from gateway.api.oauth import routes_for
from gateway.service import Gateway, Refused
from tests.gateway.served import Served, gateway_settings, serve_gateway

PASSWORD = "correct horse battery"
REDIRECT = "http://127.0.0.1:33418/callback"


@pytest.fixture
async def served(engine: Engine, tmp_path: Path) -> AsyncIterator[Served]:
    url = engine.url.render_as_string(hide_password=False)
    async with serve_gateway(gateway_settings(tmp_path, database_url=url)) as s:
        yield s


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, follow_redirects=False) as client:
        yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass
class Endpoints:
    authorize: str
    token: str
    register: str
    revoke: str


async def discover(http: httpx.AsyncClient, base: str) -> Endpoints:
    """What an MCP client does first: /mcp refuses it and says where to look."""
    door = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    if door.status_code != 404:  # the door is served: its 401 names the metadata
        assert door.status_code == 401, door.text
        challenge = door.headers["www-authenticate"]
        found = re.search(r'resource_metadata="([^"]+)"', challenge)
        assert found, challenge
        metadata_url = found.group(1)
    else:
        metadata_url = f"{base}/.well-known/oauth-protected-resource"
    resource = (await http.get(metadata_url)).json()
    assert resource["resource"] == f"{base}/mcp"
    assert resource["scopes_supported"] == ["agent"]
    # RFC 9728 §3.1's path form says the same
    assert (await http.get("/.well-known/oauth-protected-resource/mcp")).json() == resource
    issuer = resource["authorization_servers"][0].rstrip("/")
    assert issuer == base
    meta = (await http.get(f"{issuer}/.well-known/oauth-authorization-server")).json()
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token"} <= set(meta["grant_types_supported"])
    return Endpoints(
        meta["authorization_endpoint"],
        meta["token_endpoint"],
        meta["registration_endpoint"],
        meta["revocation_endpoint"],
    )


async def register(
    http: httpx.AsyncClient, ep: Endpoints, name: str = "Test Client", **extra: Any
) -> dict[str, Any]:
    r = await http.post(
        ep.register,
        json={
            "redirect_uris": [REDIRECT],
            "client_name": name,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def login_page(
    http: httpx.AsyncClient, ep: Endpoints, client_id: str, challenge: str, **extra: str
) -> tuple[str, str, str]:
    """/authorize → the login page: (its address, the request id, the CSRF value)."""
    r = await http.get(
        ep.authorize,
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "st4te",
            "scope": "agent",
            **extra,
        },
    )
    assert r.status_code == 302, r.text
    page_url = r.headers["location"]
    page = await http.get(page_url)
    assert page.status_code == 200, page.text
    assert page.headers["x-frame-options"] == "DENY"
    request_id = re.search(r'name="request" value="([^"]+)"', page.text)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert request_id and csrf
    return page.text, request_id.group(1), csrf.group(1)


async def allow(
    http: httpx.AsyncClient, request_id: str, csrf: str, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await http.post(
        "/oauth/login",
        data={
            "request": request_id,
            "csrf": csrf,
            "email": email,
            "password": password,
            "decision": "allow",
        },
    )


async def code_for(
    http: httpx.AsyncClient, ep: Endpoints, client_id: str, email: str
) -> tuple[str, str]:
    """A code for ``email``'s login: (code, PKCE verifier)."""
    verifier, challenge = pkce()
    _, request_id, csrf = await login_page(http, ep, client_id, challenge)
    r = await allow(http, request_id, csrf, email)
    assert r.status_code == 303, r.text
    back = urlparse(r.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    query = parse_qs(back.query)
    assert query["state"] == ["st4te"]
    return query["code"][0], verifier


async def exchange(
    http: httpx.AsyncClient, ep: Endpoints, client_id: str, code: str, verifier: str
) -> httpx.Response:
    return await http.post(
        ep.token,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )


async def refresh(
    http: httpx.AsyncClient, ep: Endpoints, client_id: str, token: str
) -> httpx.Response:
    return await http.post(
        ep.token,
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
    )


def who(served: Served, token: str) -> str:
    return served.gw.authenticate(token).id


async def test_browser_login_gives_the_person_a_token_for_their_agent(
    served: Served, http: httpx.AsyncClient
) -> None:
    alice = await served.sign_up("alice@example.com")
    ep = await discover(http, served.url)
    client = await register(http, ep)
    assert client["scope"] == "agent"
    verifier, challenge = pkce()
    page, request_id, csrf = await login_page(http, ep, client["client_id"], challenge)
    assert "Test Client" in page and "http://127.0.0.1" in page

    wrong = await allow(http, request_id, csrf, "alice@example.com", "not her password")
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text).group(1)  # type: ignore[union-attr]
    r = await allow(http, request_id, csrf, "alice@example.com")
    assert r.status_code == 303, r.text
    code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]

    # the code with a wrong verifier is refused (and stays unused)
    bad = await exchange(http, ep, client["client_id"], code, pkce()[0])
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    r = await exchange(http, ep, client["client_id"], code, verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "agent"
    assert 0 < tokens["expires_in"] <= 3600
    # a code is used once
    again = await exchange(http, ep, client["client_id"], code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    # the gateway takes the access token as alice's, as a token (no login session powers)
    access = tokens["access_token"]
    caller = served.gw.authenticate(access)
    assert caller.id == alice["account"]["id"] and caller.via == "token"
    status, me = await served.get("/api/me", access)
    assert status == 200 and me["account"]["email"] == "alice@example.com"
    status, body = await served.post("/api/tokens", {"name": "more"}, access)
    assert status == 403, body

    # refresh: a new pair; the spent refresh token is not taken again
    r = await refresh(http, ep, client["client_id"], tokens["refresh_token"])
    assert r.status_code == 200, r.text
    renewed = r.json()
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert who(served, renewed["access_token"]) == alice["account"]["id"]

    # listed beside her personal access tokens, and revoked the same way
    session = alice["access_token"]
    status, pat = await served.post("/api/tokens", {"name": "Claude Desktop"}, session)
    assert status == 201
    status, listed = await served.get("/api/tokens", session)
    assert status == 200
    by_kind = {t["kind"]: t for t in listed["tokens"]}
    grant = by_kind["oauth"]
    assert grant["name"] == "Test Client" and grant["scope"] == "agent"
    assert grant["last_used_at"] >= grant["created_at"] and not grant["revoked"]
    assert by_kind["pat"]["name"] == "Claude Desktop"

    status, _ = await served.delete(f"/api/tokens/{grant['id']}", session)
    assert status == 204
    for token in (access, renewed["access_token"]):  # every access token of the grant
        with pytest.raises(Refused) as refused:
            served.gw.authenticate(token)
        assert refused.value.status == 401
    status, _ = await served.get("/api/me", renewed["access_token"])
    assert status == 401
    r = await refresh(http, ep, client["client_id"], renewed["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # her agent is told too (it checks the token id it sees against this list)
    revoked = served.gw.cfg.agent_dir(alice["account"]["id"]) / "state" / "revoked_tokens"
    assert grant["id"] in revoked.read_text().split()
    status, listed = await served.get("/api/tokens", session)
    assert [t["revoked"] for t in listed["tokens"] if t["kind"] == "oauth"] == [True]
    assert who(served, pat["token"]) == alice["account"]["id"]  # her PAT is untouched


async def test_one_persons_grant_never_reaches_another(
    served: Served, http: httpx.AsyncClient
) -> None:
    alice = await served.sign_up("alice@example.com")
    bob = await served.sign_up("bob@example.com")
    ep = await discover(http, served.url)
    client_a = await register(http, ep, "Alice's IDE")
    client_b = await register(http, ep, "Bob's IDE")

    code, verifier = await code_for(http, ep, client_a["client_id"], "alice@example.com")
    # another client cannot exchange alice's code, even with its verifier
    stolen = await exchange(http, ep, client_b["client_id"], code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    a = (await exchange(http, ep, client_a["client_id"], code, verifier)).json()
    code, verifier = await code_for(http, ep, client_b["client_id"], "bob@example.com")
    b = (await exchange(http, ep, client_b["client_id"], code, verifier)).json()

    assert who(served, a["access_token"]) == alice["account"]["id"]
    assert who(served, b["access_token"]) == bob["account"]["id"]
    status, me = await served.get("/api/me", b["access_token"])
    assert me["account"]["email"] == "bob@example.com"
    # alice's refresh token is hers with her client only
    r = await refresh(http, ep, client_b["client_id"], a["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    # bob neither sees nor revokes alice's grant
    status, listed = await served.get("/api/tokens", bob["access_token"])
    assert [t["name"] for t in listed["tokens"]] == ["Bob's IDE"]
    status, alices = await served.get("/api/tokens", alice["access_token"])
    grant_id = alices["tokens"][0]["id"]
    status, _ = await served.delete(f"/api/tokens/{grant_id}", bob["access_token"])
    assert status == 404
    assert who(served, a["access_token"]) == alice["account"]["id"]


async def test_a_refresh_token_used_twice_revokes_its_grant(
    served: Served, http: httpx.AsyncClient
) -> None:
    await served.sign_up("alice@example.com")
    ep = await discover(http, served.url)
    client = await register(http, ep)
    code, verifier = await code_for(http, ep, client["client_id"], "alice@example.com")
    first = (await exchange(http, ep, client["client_id"], code, verifier)).json()
    second = (await refresh(http, ep, client["client_id"], first["refresh_token"])).json()
    # the first refresh token again: a copy in other hands; the whole grant ends
    r = await refresh(http, ep, client["client_id"], first["refresh_token"])
    assert r.status_code == 400
    r = await refresh(http, ep, client["client_id"], second["refresh_token"])
    assert r.status_code == 400
    with pytest.raises(Refused):
        served.gw.authenticate(second["access_token"])


async def test_the_sdk_revocation_endpoint_ends_the_grant(
    served: Served, http: httpx.AsyncClient
) -> None:
    await served.sign_up("alice@example.com")
    ep = await discover(http, served.url)
    client = await register(http, ep)
    code, verifier = await code_for(http, ep, client["client_id"], "alice@example.com")
    tokens = (await exchange(http, ep, client["client_id"], code, verifier)).json()
    # (the SDK's handler wants a client_secret field even from a public client: empty)
    r = await http.post(
        ep.revoke,
        data={
            "token": tokens["access_token"],
            "client_id": client["client_id"],
            "client_secret": "",
        },
    )
    assert r.status_code == 200, r.text
    with pytest.raises(Refused):
        served.gw.authenticate(tokens["access_token"])
    r = await refresh(http, ep, client["client_id"], tokens["refresh_token"])
    assert r.status_code == 400


async def test_what_is_refused_is_refused_clearly(served: Served, http: httpx.AsyncClient) -> None:
    await served.sign_up("alice@example.com")
    ep = await discover(http, served.url)
    client = await register(http, ep)
    verifier, challenge = pkce()
    base = {
        "response_type": "code",
        "client_id": client["client_id"],
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s",
    }
    # a redirect URI not registered (exactly) is refused, never followed
    for uri in (
        "http://127.0.0.1:33418/callback/evil",
        "http://127.0.0.1:33419/callback",
        "https://evil.example/callback",
    ):
        r = await http.get(ep.authorize, params={**base, "redirect_uri": uri})
        assert r.status_code == 400, (uri, r.text)
        assert "location" not in r.headers
        assert r.json()["error"] == "invalid_request"
    # an unknown client, plain PKCE, a missing challenge: 400 (or an error back to the client)
    r = await http.get(ep.authorize, params={**base, "client_id": "nobody"})
    assert r.status_code == 400
    r = await http.get(ep.authorize, params={**base, "code_challenge_method": "plain"})
    assert r.status_code in (302, 400)
    if r.status_code == 302:
        assert "error=invalid_request" in r.headers["location"]
    # a token for another resource than this gateway's /mcp
    r = await http.get(
        ep.authorize,
        params={**base, "redirect_uri": REDIRECT, "resource": "https://other.example/mcp"},
    )
    assert r.status_code == 302 and "error=invalid_target" in r.headers["location"]

    # registration: plain http off this machine, script schemes
    for uri in ("http://evil.example/cb", "javascript:alert(1)"):
        r = await http.post(
            ep.register,
            json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"},
        )
        assert r.status_code == 400, (uri, r.text)
    r = await http.post(ep.register, content=b"not json")
    assert r.status_code == 400

    # the login form: without the page's CSRF cookie; an unknown request; not a form
    _, request_id, csrf = await login_page(http, ep, client["client_id"], challenge)
    async with httpx.AsyncClient(base_url=served.url) as stranger:  # no cookie
        r = await allow(stranger, request_id, csrf, "alice@example.com")
        assert r.status_code == 403 and "location" not in r.headers
    r = await allow(http, "no-such-request", csrf, "alice@example.com")
    assert r.status_code == 400
    r = await http.get("/oauth/login", params={"request": "no-such-request"})
    assert r.status_code == 400
    r = await http.post("/oauth/login", content=b"x" * 20_000)
    assert r.status_code == 413

    # deny: back to the client with access_denied, and the request is gone
    r = await http.post(
        "/oauth/login", data={"request": request_id, "csrf": csrf, "decision": "deny"}
    )
    assert r.status_code == 303
    query = parse_qs(urlparse(r.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st4te"]
    r = await allow(http, request_id, csrf, "alice@example.com")
    assert r.status_code == 400

    # a wrong token at the token endpoint
    r = await exchange(http, ep, client["client_id"], "made-up", verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_the_login_page_is_throttled_like_the_login(
    served: Served, http: httpx.AsyncClient
) -> None:
    await served.sign_up("alice@example.com")
    ep = await discover(http, served.url)
    client = await register(http, ep)
    _, challenge = pkce()
    _, request_id, csrf = await login_page(http, ep, client["client_id"], challenge)
    statuses = []
    for _ in range(served.gw.throttle.policies.account.lockout_failures + 1):
        r = await allow(http, request_id, csrf, "alice@example.com", "guess guess guess")
        statuses.append(r.status_code)
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            break
    assert statuses[0] == 401 and statuses[-1] == 429
    # the right password is refused as well while the account is locked
    r = await allow(http, request_id, csrf, "alice@example.com")
    assert r.status_code == 429


class _Memory:
    """The SDK client's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@pytest.mark.integration
async def test_the_sdk_client_logs_in_by_browser_and_calls_its_agent_through_the_door(
    served: Served, http: httpx.AsyncClient
) -> None:
    """The MCP SDK's own OAuth client, from the door's 401 to a tool call: the "browser"
    is this test, logging in on the gateway's page."""
    alice = await served.sign_up("alice@example.com")
    if (await http.post("/mcp", json={})).status_code == 404:
        pytest.skip("the gateway's /mcp door is not served")
    landed: list[str] = []

    async def browser(authorization_url: str) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as b:
            to_page = await b.get(authorization_url)
            assert to_page.status_code == 302, to_page.text
            page = await b.get(to_page.headers["location"])
            request_id = re.search(r'name="request" value="([^"]+)"', page.text)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert request_id and csrf, page.text
            r = await b.post(
                f"{served.url}/oauth/login",
                data={
                    "request": request_id.group(1),
                    "csrf": csrf.group(1),
                    "email": "alice@example.com",
                    "password": PASSWORD,
                    "decision": "allow",
                },
            )
            assert r.status_code == 303, r.text
            landed.append(r.headers["location"])

    async def callback() -> AuthorizationCodeResult:
        query = parse_qs(urlparse(landed[-1]).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0])

    storage = _Memory()
    auth = OAuthClientProvider(
        f"{served.url}/mcp",
        OAuthClientMetadata(
            client_name="SDK client",
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage,
        redirect_handler=browser,
        callback_handler=callback,
    )
    async with (
        httpx2.AsyncClient(auth=auth, timeout=120) as h,
        Client(streamable_http_client(f"{served.url}/mcp", http_client=h)) as client,
    ):
        result = await client.call_tool("set_watchlist", {"tickers": ["BINANCE:ETH/USDT"]})
        assert not result.is_error, result
        got = await client.call_tool("get_watchlist", {})
        first = got.content[0]
        assert isinstance(first, TextContent)
        assert json.loads(first.text)["watchlist"] == ["BINANCE:ETH/USDT"]
    assert len(landed) == 1 and storage.tokens is not None
    access = storage.tokens.access_token
    assert who(served, access) == alice["account"]["id"]

    # revoked from her token list: the door refuses the token at once
    status, listed = await served.get("/api/tokens", alice["access_token"])
    (grant,) = [t for t in listed["tokens"] if t["kind"] == "oauth"]
    assert grant["name"] == "SDK client"
    status, _ = await served.delete(f"/api/tokens/{grant['id']}", alice["access_token"])
    assert status == 204
    r = await http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={
            "Authorization": f"Bearer {access}",
            "Accept": "application/json, text/event-stream",
        },
    )
    assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"]


def test_each_one_time_thing_is_used_once_by_racing_replicas(engine: Engine) -> None:
    """Two replicas (two stores, one database) spending the same code, pending request
    and refresh token at the same moment: one wins, the other gets nothing."""
    alice = Accounts(engine).sign_up("alice@example.com", PASSWORD)
    stores = [OAuthStore(engine), OAuthStore(engine)]
    stores[0].save_client("c1", b"{}")

    def race(spend: Any) -> list[Any]:
        with ThreadPoolExecutor(2) as pool:
            return [r for r in pool.map(spend, stores) if r is not None]

    for _ in range(5):
        request_id = stores[0].hold("c1", b"{}", 600)
        assert len(race(lambda s, r=request_id: s.take_pending(r))) == 1
        code = stores[0].issue_code("c1", alice.id, b"{}", 120)
        won = race(lambda s, c=code: s.open_grant(c, "IDE", "agent", None, 3600))
        assert len(won) == 1
        _, refresh_token = won[0]
        assert len(race(lambda s, t=refresh_token: s.rotate(t, 3600))) == 1
    assert len(stores[1].grants(alice.id)) == 5


async def test_oauth_is_on_only_where_its_issuer_can_be(tmp_path: Path) -> None:
    """OAuth 2.1 wants https off this machine: a plain-http public address turns it off
    (with a log line) rather than stopping the gateway; an https one names the issuer."""
    for public_url, on in (
        ("http://gateway.example.com", False),
        ("https://gateway.example.com/", True),
        (None, True),  # http://127.0.0.1:port: this machine
    ):
        gw = Gateway.build(gateway_settings(tmp_path / str(on), public_url=public_url))
        try:
            paths = {getattr(r, "path", "") for r in routes_for(gw)}
            assert ("/authorize" in paths) is on, public_url
            assert ("/.well-known/oauth-protected-resource" in paths) is on
        finally:
            await gw.close()
