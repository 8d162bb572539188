"""A second person trying to reach the first one's agent, files, events and vectors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import zmq
import zmq.asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dexorder.schemas import UserEvent, encode
from dexorder.tokens import mint_token
from tests.gateway.served import Served, alert_event, gateway_settings, serve_gateway

pytestmark = pytest.mark.integration


async def mcp_call(url: str, token: str, tool: str, args: dict[str, Any] | None = None) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as c,
    ):
        return await c.call_tool(tool, args or {})


async def agent_status(url: str, token: str) -> int:
    """The HTTP status the agent's MCP endpoint answers ``token`` with."""
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {token}"},
        )
        return r.status_code


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


async def send_event(endpoint: str, event: UserEvent) -> None:
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        await sock.send(encode(event))
        await asyncio.sleep(0)  # let the frame leave before the socket closes
        await sock.poll(2000)
    finally:
        sock.close()


async def test_bob_cannot_reach_alices_agent_tokens_alerts_or_events(served: Served) -> None:
    alice = await served.sign_up("alice@example.com")
    bob = await served.sign_up("bob@example.com")
    a_id, b_id = alice["account"]["id"], bob["account"]["id"]

    async with (
        served.socket(alice["access_token"]) as a_ws,
        served.socket(bob["access_token"]) as b_ws,
    ):
        frames = await a_ws.ask("set an alert at 70k")
        assert "Alert set" in frames[-1]["text"]
        # bob's turns reach only bob's agent
        frames = await b_ws.ask("what alerts do I have")
        assert "no alerts" in frames[-1]["text"]

        a_agent = await served.gw.provisioner.ensure(a_id, "free")
        b_agent = await served.gw.provisioner.ensure(b_id, "free")
        assert a_agent.mcp_url != b_agent.mcp_url
        # bob's own agent token (and a token he made) do not open alice's agent
        bob_token = mint_token(served.gw.keys, b_id)
        assert await agent_status(a_agent.mcp_url, bob_token) == 403
        status, pat = await served.post("/api/tokens", {"name": "bob's"}, token=bob["access_token"])
        assert await agent_status(a_agent.mcp_url, pat["token"]) == 403
        # a gateway session is not an agent token
        assert await agent_status(a_agent.mcp_url, bob["access_token"]) == 401
        assert await agent_status(b_agent.mcp_url, bob_token) != 401  # the check can pass

        # alice's tokens cannot be listed or revoked by bob
        status, a_pat = await served.post("/api/tokens", {"name": "a"}, token=alice["access_token"])
        status, _ = await served.delete(f"/api/tokens/{a_pat['id']}", token=bob["access_token"])
        assert status == 404
        _, listed = await served.get("/api/tokens", token=bob["access_token"])
        assert [t["id"] for t in listed["tokens"]] == [pat["id"]]
        status, _ = await served.post("/api/chat", {"message": "my alerts"}, token=a_pat["token"])
        assert status == 200

        # events: an event for alice signed with bob's token is refused; a real one reaches
        # alice's socket and never bob's
        endpoint = served.gw.events.endpoint
        forged = UserEvent(
            event_id="forged-1",
            user=a_id,
            kind="fill",
            critical=True,
            payload={"side": "sell"},
            auth=bob_token,
        )
        unsigned = UserEvent(event_id="forged-2", user=a_id, kind="fill", critical=True)
        await send_event(endpoint, forged)
        await send_event(endpoint, unsigned)
        genuine = alert_event(
            served.gw,
            a_id,
            "real-1",
            ticker="BINANCE:BTC/USDT",
            condition="above",
            price=70000,
            triggered_price=70010,
        )
        await send_event(endpoint, genuine)
        frame = await a_ws.until("event")
        assert frame["event_id"] == "real-1" and "went above 70000" in frame["text"]
        assert served.gw.events.stats["forged"] == 2
        with pytest.raises(TimeoutError):
            await b_ws.until("event", timeout=0.5)
