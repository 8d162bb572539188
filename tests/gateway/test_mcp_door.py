"""The gateway's ``/mcp``: outside MCP clients (the SDK's ``Client``) reach their own agent,
and only it, through the door; bad and revoked tokens are stopped there; a sleeping agent
is woken by a call; a client that leaves holds nothing open."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import BlobResourceContents, CallToolResult, TextContent, TextResourceContents
from starlette.applications import Starlette
from starlette.routing import Route

from dexorder.process import free_port
from dexorder.tokens import mint_token
from gateway.mcp_door import McpDoor, to_agent, to_client
from tests.agent.conftest import fill_lake
from tests.gateway.replicas import REDIS_URL, serve_replicas
from tests.gateway.served import Served, gateway_settings, run_cli, serve_asgi, serve_gateway

pytestmark = pytest.mark.integration

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
#: A client's own name, as the agent should see it whichever replica opens its session.
CLIENT = {"name": "claude-desktop-test", "version": "9.9.1"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


@contextlib.asynccontextmanager
async def mcp(url: str, token: str, mode: str = "auto") -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def data(result: CallToolResult) -> Any:
    first = result.content[0]
    assert isinstance(first, TextContent), first
    assert not result.is_error, first.text
    return json.loads(first.text)


async def person(s: Served, email: str) -> tuple[str, str, dict[str, Any]]:
    """A new account: its id, a personal access token, and the sign-up answer."""
    signed = await s.sign_up(email)
    status, pat = await s.post("/api/tokens", {"name": "claude"}, token=signed["access_token"])
    assert status == 201, pat
    return signed["account"]["id"], pat["token"], {**signed, "pat": pat}


def text_of(contents: Any) -> str:
    return "".join(c.text for c in contents if isinstance(c, TextResourceContents))


async def test_an_mcp_client_lists_calls_reads_and_backtests_through_the_door(
    served: Served,
) -> None:
    fill_lake(served.gw.cfg, days=30)
    alice, pat, _ = await person(served, "alice@example.com")
    async with mcp(served.url + "/mcp", pat) as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert {"get_positions", "set_watchlist", "run_backtest"} <= tools
        assert data(await c.call_tool("get_positions", {}))["cash"] == 10_000
        data(await c.call_tool("set_watchlist", {"tickers": ["BINANCE:ETH/USDT"]}))
        state = json.loads(text_of((await c.read_resource("context://workspace-state")).contents))
        assert state["watchlist"] == ["BINANCE:ETH/USDT"]
        profile = json.loads(text_of((await c.read_resource("context://user-profile")).contents))
        assert profile["user"] == alice

        run = data(
            await c.call_tool(
                "run_backtest",
                {
                    "strategy": "sma_cross",
                    "ticker": "BINANCE:BTC/USDT",
                    "timeframe": "1h",
                    "start": "2024-01-01",
                    "end": "2024-01-31",
                },
            )
        )
        assert run["candles"] == 720 and run["chart"] == f"backtest://{run['id']}/chart.png"
        chart = (await c.read_resource(run["chart"])).contents
        blob = next(x for x in chart if isinstance(x, BlobResourceContents))
        assert base64.b64decode(blob.blob).startswith(b"\x89PNG")
    assert served.gw.provisioner.state(alice) == "running"  # started by the door


async def test_one_persons_token_reaches_only_their_own_agent(served: Served) -> None:
    alice, alice_pat, _ = await person(served, "alice@example.com")
    bob, bob_pat, _ = await person(served, "bob@example.com")
    async with mcp(served.url + "/mcp", alice_pat) as a, mcp(served.url + "/mcp", bob_pat) as b:
        data(await a.call_tool("set_watchlist", {"tickers": ["BINANCE:ETH/USDT"]}))
        data(await b.call_tool("set_watchlist", {"tickers": ["BINANCE:SOL/USDT"]}))
        assert data(await a.call_tool("get_watchlist", {}))["watchlist"] == ["BINANCE:ETH/USDT"]
        assert data(await b.call_tool("get_watchlist", {}))["watchlist"] == ["BINANCE:SOL/USDT"]
        for client, who in ((a, alice), (b, bob)):
            read = await client.read_resource("context://user-profile")
            assert json.loads(text_of(read.contents))["user"] == who

    # bob's session id sent with alice's token: still alice's agent (a fresh session there)
    async with httpx2.AsyncClient(base_url=served.url, timeout=60) as http:
        opened = await http.post(
            "/mcp",
            json=INITIALIZE,
            headers={"Authorization": f"Bearer {bob_pat}", "Accept": "application/json"},
        )
        assert opened.status_code == 200, opened.text
        bobs_session = opened.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
        call["params"] = {"name": "get_watchlist", "arguments": {}}
        r = await http.post(
            "/mcp",
            json=call,
            headers={
                "Authorization": f"Bearer {alice_pat}",
                "Accept": "application/json, text/event-stream",
                "Mcp-Session-Id": bobs_session,
                "MCP-Protocol-Version": "2025-06-18",
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["mcp-session-id"] == bobs_session  # the client's id, translated
        content = r.json()["result"]["structuredContent"]
        assert content["watchlist"] == ["BINANCE:ETH/USDT"]


async def test_missing_invalid_and_revoked_tokens_are_refused_with_the_metadata_address(
    served: Served,
) -> None:
    alice, pat, signed = await person(served, "alice@example.com")
    metadata = f'Bearer resource_metadata="{served.url}/.well-known/oauth-protected-resource"'
    body = json.dumps(INITIALIZE)
    async with httpx2.AsyncClient(base_url=served.url) as http:

        async def post(token: str | None) -> httpx2.Response:
            headers = {
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            }
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            return await http.post("/mcp", content=body, headers=headers)

        for token, words in ((None, "missing"), ("not-a-token", "invalid")):
            r = await post(token)
            assert r.status_code == 401 and words in r.json()["error"], r.text
            assert r.headers["www-authenticate"] == metadata
        # a token for the agent the gateway did not make long-lived enough to be a PAT, or
        # one of another kind of key: both refused
        r = await post(mint_token(served.gw.keys, alice, "pat", ttl_s=400 * 86_400))
        assert r.status_code == 401 and r.headers["www-authenticate"] == metadata

        status, _ = await served.delete(
            f"/api/tokens/{signed['pat']['id']}", token=signed["access_token"]
        )
        assert status == 204
        r = await post(pat)
        assert r.status_code == 401 and "revoked" in r.json()["error"]
        assert r.headers["www-authenticate"] == metadata
        # a login session goes through the door as well
        assert (await post(signed["access_token"])).status_code == 200
        big = await http.post(
            "/mcp",
            content=b"x" * (2 * 1024 * 1024),
            headers={"Authorization": f"Bearer {signed['access_token']}"},
        )
        assert big.status_code == 413 and "too large" in big.json()["error"]


async def test_requests_past_the_tiers_mcp_rate_are_refused_with_a_retry_time(
    served: Served,
) -> None:
    _, pat, _ = await person(served, "alice@example.com")
    _, bob_pat, _ = await person(served, "bob@example.com")
    free = served.gw.limits.tiers["free"]
    served.gw.limits.tiers["free"] = dataclasses.replace(free, mcp_requests_per_minute=3)
    # mid-minute, held there: no minute may begin between the requests counted
    midminute = (time.time() // 60) * 60 + 30
    served.gw.limits.clock = lambda: midminute
    async with httpx2.AsyncClient(base_url=served.url, timeout=60) as http:

        async def post(token: str) -> httpx2.Response:
            return await http.post(
                "/mcp",
                content=json.dumps(INITIALIZE),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json, text/event-stream",
                    "Content-Type": "application/json",
                },
            )

        assert [(await post(pat)).status_code for _ in range(3)] == [200, 200, 200]
        r = await post(pat)
        assert r.status_code == 429 and "3 MCP requests a minute" in r.json()["error"]
        assert r.headers["retry-after"] == "30"
        # counted per person: another one's client is not held back
        assert (await post(bob_pat)).status_code == 200


async def test_the_metadata_address_is_the_public_one_where_it_is_set(tmp_path: Path) -> None:
    cfg = gateway_settings(tmp_path / "home", public_url="https://dexorder.example/")
    async with serve_gateway(cfg) as s, httpx2.AsyncClient() as http:
        r = await http.post(s.url + "/mcp", json=INITIALIZE)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == (
        'Bearer resource_metadata="https://dexorder.example/.well-known/oauth-protected-resource"'
    )


async def test_revoking_a_token_stops_an_open_session_at_the_door_and_at_the_agent(
    served: Served,
) -> None:
    alice, pat, signed = await person(served, "alice@example.com")
    async with mcp(served.url + "/mcp", pat) as c:
        assert data(await c.call_tool("get_positions", {}))["cash"] == 10_000
        status, _ = await served.delete(
            f"/api/tokens/{signed['pat']['id']}", token=signed["access_token"]
        )
        assert status == 204
        with pytest.raises(MCPError):  # the SDK says only "Server returned an error response"
            await c.call_tool("get_positions", {})
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            served.url + "/mcp",
            content=json.dumps(INITIALIZE),
            headers={"Authorization": f"Bearer {pat}", "Content-Type": "application/json"},
        )
    assert r.status_code == 401 and "revoked" in r.json()["error"]

    # the agent refuses it too: the door's tokens carry the revoked token's id
    endpoint = await served.gw.provisioner.ensure(alice, "free")
    carried = mint_token(served.gw.keys, alice, "pat", 60, token_id=signed["pat"]["id"])
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            endpoint.mcp_url,
            content=json.dumps(INITIALIZE),
            headers={
                "Authorization": f"Bearer {carried}",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert r.status_code == 401 and "revoked" in r.text


async def test_a_sleeping_agent_is_woken_by_a_call_and_sessions_carry_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idle = {"DEXORDER_AGENT__IDLE_TIMEOUT_S": json.dumps({"free": 2, "pro": 3600})}
    async with serve_gateway(gateway_settings(tmp_path / "home"), agent_env=idle) as s:
        alice, pat, _ = await person(s, "alice@example.com")
        p: Any = s.gw.provisioner
        # the current protocol (no session) and the handshake-era one (a session the door
        # opens again on the fresh agent), each across an idle exit of the agent
        async with mcp(s.url + "/mcp", pat) as modern, mcp(s.url + "/mcp", pat, "legacy") as old:
            data(await modern.call_tool("set_watchlist", {"tickers": ["BINANCE:ETH/USDT"]}))
            assert data(await old.call_tool("get_watchlist", {}))["watchlist"]
            # the legacy client holds a GET stream open through the door meanwhile: it must
            # not keep the agent awake
            exits = p.stats["idle_exits"]
            async with asyncio.timeout(60):
                while p.stats["idle_exits"] == exits:
                    await asyncio.sleep(0.05)
            assert p.state(alice) == "idle"
            started = p.stats["started"]
            listed = data(await modern.call_tool("get_watchlist", {}))
            assert listed["watchlist"] == ["BINANCE:ETH/USDT"]
            assert p.stats["started"] >= started + 1 and p.stats["crashes"] == 0
            # the legacy session, unknown to the fresh agent, carries on: two requests at
            # once, refused together, open one session there
            both = await asyncio.gather(
                old.call_tool("get_watchlist", {}), old.call_tool("get_positions", {})
            )
            assert data(both[0])["watchlist"] and data(both[1])["cash"] == 10_000
            assert capsys.readouterr().out.count("mcp session resumed on a fresh agent") == 1


async def test_a_get_stream_ends_when_its_client_leaves_and_after_the_linger(
    served: Served,
) -> None:
    """On Knative an open request keeps the agent's pod up: the door's GET stream ends
    with its client, and (with a linger) once its person stopped calling."""
    alice, pat, _ = await person(served, "alice@example.com")
    door = McpDoor(served.gw, stream_linger_s=3.0)
    auth = {"Authorization": f"Bearer {pat}"}
    async with serve_door(door) as url, httpx2.AsyncClient(timeout=60) as http:
        listen = {**auth, "Accept": "text/event-stream"}
        # an agent nobody called is not woken to listen
        assert (await http.get(url, headers=listen)).status_code == 405
        opened = await http.post(
            url, json=INITIALIZE, headers={**auth, "Accept": "application/json"}
        )
        session = opened.headers["mcp-session-id"]
        headers = {**listen, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}

        async def ping() -> None:
            r = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 9, "method": "ping"},
                headers={**headers, "Accept": "application/json, text/event-stream"},
            )
            assert r.status_code == 200, r.text

        # a client that leaves: its disconnect reaches the door (and the agent)
        await ping()
        async with http.stream("GET", url, headers=headers) as stream:
            assert stream.status_code == 200
        async with asyncio.timeout(30):
            while door.stats["disconnects"] == 0:
                await asyncio.sleep(0.02)
        # a client that stays: the stream ends once the person has stopped calling. The
        # agent takes one GET stream a session (409 while one is open): a new one is
        # served only once the door has closed the one its client left
        async with asyncio.timeout(30):
            while True:
                await ping()
                async with http.stream("GET", url, headers=headers) as stream:
                    if stream.status_code == 409:
                        continue
                    assert stream.status_code == 200
                    async for _ in stream.aiter_raw():
                        pass
                    break
        assert (await http.get(url, headers=headers)).status_code == 405  # quiet now
    del alice


async def test_dexorder_token_makes_a_pat_for_the_local_person_that_opens_the_door(
    served: Served,
) -> None:
    cfg = served.gw.cfg
    env = {"DEXORDER_HOME": str(cfg.home), "DEXORDER_GATEWAY__PORT": str(cfg.gateway.port)}
    code, out, errs = await run_cli(env, "token", "--name", "claude", "--days", "7")
    assert code == 0, errs
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert lines["MCP URL"] == served.url + "/mcp"
    token = lines["token"]
    config = json.loads(errs[errs.index("{") :])
    server = config["mcpServers"]["dexorder"]
    assert server["args"][1] == served.url + "/mcp"
    assert server["env"]["AUTH_HEADER"] == f"Bearer {token}"
    async with mcp(served.url + "/mcp", token) as c:
        profile = json.loads(text_of((await c.read_resource("context://user-profile")).contents))
        assert profile["user"] == cfg.gateway.local_user
    code, _, errs = await run_cli(env, "token", "--days", "9999")
    assert code == 2 and "at most" in errs


def test_headers_hop_by_hop_dropped_credentials_replaced_sessions_translated() -> None:
    given = [
        (b"Host", b"gateway"),
        (b"Authorization", b"Bearer pat"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"5"),
        (b"Cookie", b"session=1"),
        (b"Content-Length", b"9"),
        (b"Mcp-Session-Id", b"client"),
        (b"MCP-Protocol-Version", b"2025-06-18"),
        (b"Last-Event-ID", b"7"),
        (b"traceparent", b"00-abc-def-01"),
        (b"Accept", b"text/event-stream"),
    ]
    assert to_agent(given, "t", "agent") == [
        (b"mcp-protocol-version", b"2025-06-18"),
        (b"last-event-id", b"7"),
        (b"traceparent", b"00-abc-def-01"),
        (b"accept", b"text/event-stream"),
        (b"mcp-session-id", b"agent"),
        (b"authorization", b"Bearer t"),
    ]
    assert (b"mcp-session-id", b"client") in to_agent(given, "t", "client")
    back = [
        (b"transfer-encoding", b"chunked"),
        (b"content-type", b"text/event-stream"),
        (b"mcp-session-id", b"agent"),
        (b"www-authenticate", b'Bearer realm="dexorder-agent"'),
        (b"date", b"today"),
    ]
    assert to_client(back, "client") == [
        (b"content-type", b"text/event-stream"),
        (b"mcp-session-id", b"client"),
    ]
    assert (b"mcp-session-id", b"agent") in to_client(back, None)


@contextlib.asynccontextmanager
async def serve_door(door: McpDoor) -> AsyncIterator[str]:
    """``door`` alone on a free port; yields its ``/mcp`` URL."""
    app = Starlette(routes=[Route("/mcp", door, methods=["GET", "POST", "DELETE"])])
    try:
        async with serve_asgi(app, free_port()) as url:
            yield f"{url}/mcp"
    finally:
        await door.close()


async def test_a_replica_that_never_saw_the_session_replays_the_clients_own_initialize(
    tmp_path: Path,
) -> None:
    """Replica A (a gateway process) sees the client's ``initialize``; the agent sleeps;
    the client's next call reaches replica B (a gateway in this process on the same
    stores), which wakes the agent and opens the session again with the client's own
    ``initialize`` (kept in Redis), not a generic one."""
    idle = {"DEXORDER_AGENT__IDLE_TIMEOUT_S": json.dumps({"free": 2, "pro": 3600})}
    async with serve_replicas(tmp_path, n=1, settings=idle) as r:
        a = r[0]
        alice = await a.client.sign_up("alice@example.com")
        user, token = alice["account"]["id"], alice["access_token"]
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": CLIENT},
        }
        async with httpx2.AsyncClient(timeout=60) as http:
            opened = await http.post(a.url + "/mcp", json=init, headers=auth)
            assert opened.status_code == 200, opened.text
            session = opened.headers["mcp-session-id"]
            on_session = {**auth, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post(a.url + "/mcp", json=done, headers=on_session)).is_success
            # the agent A woke sleeps once nobody calls (2 s)
            async with asyncio.timeout(60):
                while (await a.client.get("/api/me", token=token))[1]["agent"] == "running":
                    await asyncio.sleep(0.1)

            # replica B: what its door sends the agent, as the agent receives it
            sent: list[dict[str, Any]] = []

            async def record(request: httpx2.Request) -> None:
                if request.method == "POST":
                    sent.append(json.loads(request.content))

            cfg = gateway_settings(
                r.home,
                database_url=r.database_url,
                redis_url=REDIS_URL,
                redis_prefix=r.redis_prefix,
            )
            to_agent = httpx2.AsyncClient(timeout=60, event_hooks={"request": [record]})
            async with serve_gateway(cfg) as b:
                door = McpDoor(b.gw, http=to_agent)
                async with serve_door(door) as b_url:
                    call = {
                        "jsonrpc": "2.0",
                        "id": 2,
                        "method": "tools/call",
                        "params": {"name": "get_positions", "arguments": {}},
                    }
                    answered = await http.post(
                        b_url,
                        json=call,
                        headers={**on_session, "Accept": "application/json, text/event-stream"},
                    )
                    assert answered.status_code == 200, answered.text
                    assert '"cash"' in answered.text
                assert door.stats["resumed"] == 1
        replayed = [m for m in sent if m.get("method") == "initialize"]
        assert len(replayed) == 1, sent
        assert replayed[0]["params"]["clientInfo"] == CLIENT
        assert replayed[0]["params"]["protocolVersion"] == "2025-06-18"
        assert [m.get("method") for m in sent] == [
            "tools/call",  # refused (404): the fresh agent does not know the session
            "initialize",
            "notifications/initialized",
            "tools/call",
        ]
    del user


async def test_two_replicas_resuming_one_session_at_once_open_one_agent_session(
    tmp_path: Path,
) -> None:
    """Two doors (two replicas: each its own session-memory connection and HTTP client,
    the resume lease in Redis) both get the fresh agent's 404 for one client session
    before either resumes it: the agent is sent the client's ``initialize`` once, both
    requests are answered on the one session it opened, and the record names that one."""
    idle = {"DEXORDER_AGENT__IDLE_TIMEOUT_S": json.dumps({"free": 2, "pro": 3600})}
    cfg = gateway_settings(
        tmp_path / "home", redis_url=REDIS_URL, redis_prefix=f"test:{uuid.uuid4().hex[:8]}:"
    )
    #: (method, the agent session it went on) of each message the doors send the agent
    sent: list[tuple[str, str | None]] = []
    opened: list[str] = []  # the agent sessions the agent opened
    both_refused = asyncio.Barrier(2)

    async def record(request: httpx2.Request) -> None:
        if request.method == "POST":
            message = json.loads(request.content)
            sent.append((message.get("method"), request.headers.get("mcp-session-id")))

    async def hold_refusals(response: httpx2.Response) -> None:
        request = response.request
        if request.method != "POST":
            return
        method = json.loads(request.content).get("method")
        if method == "initialize" and response.status_code == 200:
            opened.append(response.headers["mcp-session-id"])
        if method == "tools/call" and response.status_code == 404:
            # neither door resumes before both were refused: the race, every time
            async with asyncio.timeout(30):
                await both_refused.wait()

    def to_agent_client() -> httpx2.AsyncClient:
        hooks: dict[str, list[Callable[..., Any]]] = {
            "request": [record],
            "response": [hold_refusals],
        }
        return httpx2.AsyncClient(timeout=60, event_hooks=hooks)

    async with serve_gateway(cfg, agent_env=idle) as s:
        signed = await s.sign_up("alice@example.com")
        user, token = signed["account"]["id"], signed["access_token"]
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
        one, two = McpDoor(s.gw, http=to_agent_client()), McpDoor(s.gw, http=to_agent_client())
        async with serve_door(one) as one_url, serve_door(two) as two_url:
            async with httpx2.AsyncClient(timeout=60) as http:
                params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": CLIENT}
                init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
                first = await http.post(one_url, json=init, headers=auth)
                assert first.status_code == 200, first.text
                session = first.headers["mcp-session-id"]
                on_session = {
                    **auth,
                    "Mcp-Session-Id": session,
                    "MCP-Protocol-Version": "2025-06-18",
                }
                done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                assert (await http.post(one_url, json=done, headers=on_session)).is_success
                p: Any = s.gw.provisioner
                async with asyncio.timeout(60):  # the agent sleeps once nobody calls (2 s)
                    while p.state(user) == "running":
                        await asyncio.sleep(0.05)
                sent.clear()
                opened.clear()

                def call(n: int, tool: str) -> dict[str, Any]:
                    params = {"name": tool, "arguments": {}}
                    return {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}

                answers = await asyncio.gather(
                    http.post(one_url, json=call(2, "get_positions"), headers=on_session),
                    http.post(two_url, json=call(3, "get_watchlist"), headers=on_session),
                )
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            assert '"cash"' in answers[0].text and "watchlist" in answers[1].text
            assert all(a.headers["mcp-session-id"] == session for a in answers)
            assert len(opened) == 1, sent
            assert one.stats["resumed"] + two.stats["resumed"] == 1
            assert sorted(sent, key=str) == sorted(
                [
                    ("tools/call", session),  # both refused (404): unknown to the fresh agent
                    ("tools/call", session),
                    ("initialize", None),  # the client's own, replayed once
                    ("notifications/initialized", opened[0]),
                    ("tools/call", opened[0]),  # both sent again on the one session
                    ("tools/call", opened[0]),
                ],
                key=str,
            )
            kept = await one.memory.get(user, session)
            assert kept is not None and kept.agent_session == opened[0] != session
            assert json.loads(kept.initialize)["params"]["clientInfo"] == CLIENT
