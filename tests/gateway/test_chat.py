"""Chat through the gateway end to end: HTTP and WebSocket, real agent subprocesses
started by the local provisioner, the offline model, MCP tools, confirmations, limits."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from gateway.limits import TierLimits
from tests.gateway.served import Served, gateway_settings, run_cli, serve_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


def messages_of(s: Served, user: str) -> list[dict[str, str]]:
    path = s.gw.cfg.agent_dir(user) / "state" / "memory" / "messages.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_websocket_chat_streams_tokens_and_tool_progress_and_saves_both_messages(
    served: Served,
) -> None:
    alice = await served.sign_up("alice@example.com")
    async with served.socket(alice["access_token"]) as ws:
        frames = await ws.ask("list my strategies")
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "status" and "Starting your agent" in frames[0]["text"]
        tools = [(f["name"], f["state"]) for f in frames if f["type"] == "tool"]
        assert tools == [("list_strategies", "start"), ("list_strategies", "done")]
        streamed = "".join(f["text"] for f in frames if f["type"] == "token")
        reply = frames[-1]
        assert reply["type"] == "reply" and reply["model"] == "offline"
        assert streamed == reply["text"] and kinds.count("token") > 3
        assert reply["text"].startswith("[offline model]") and "sma_cross" in reply["text"]

        again = await ws.ask("show my positions")
        assert "status" not in [f["type"] for f in again]  # the agent is running now
        assert "Cash 10,000.00" in again[-1]["text"]

    status, body = await served.post(
        "/api/chat", {"message": "what alerts do I have"}, token=alice["access_token"]
    )
    assert status == 200 and "no alerts" in body["reply"]
    assert [p["name"] for p in body["progress"]] == ["list_alerts", "list_alerts"]

    saved = messages_of(served, alice["account"]["id"])
    assert [(m["role"], m["channel"]) for m in saved] == [
        ("user", "web"),
        ("assistant", "web"),
        ("user", "web"),
        ("assistant", "web"),
        ("user", "http"),
        ("assistant", "http"),
    ]
    assert saved[0]["text"] == "list my strategies" and "sma_cross" in saved[1]["text"]


async def test_no_order_is_placed_without_a_yes_in_the_chat(served: Served) -> None:
    alice = await served.sign_up("alice@example.com")
    async with served.socket(alice["access_token"]) as ws:
        frames = await ws.ask("buy 0.1 BTC on paper")
        confirm = next(f for f in frames if f["type"] == "confirm")
        assert confirm["order"]["side"] == "buy" and confirm["order"]["quantity"] == 0.1
        assert not [f for f in frames if f["type"] == "tool"]  # nothing ran
        assert "Reply “yes”" in frames[-1]["text"]

        frames = await ws.ask("no")
        assert "Cancelled" in frames[-1]["text"] and not [f for f in frames if f["type"] == "tool"]
        frames = await ws.ask("yes")  # nothing waits any more: "yes" alone places nothing
        assert not [f for f in frames if f["type"] == "tool" and f["name"] == "execute_trade"]

        await ws.ask("sell 1 ETH on paper")
        frames = await ws.ask("list my strategies")  # anything else cancels it too
        assert (
            "sell 1.0 BINANCE:ETH/USDT" in frames[-1]["text"] and "cancelled" in frames[-1]["text"]
        )

        frames = await ws.ask("show my positions")
        assert "Cash 10,000.00" in frames[-1]["text"]
    # the paper account was never written to: no order reached it
    assert not (served.gw.cfg.agent_dir(alice["account"]["id"]) / "state" / "paper.json").exists()


async def test_bad_tokens_bad_bodies_and_rate_limits_get_clear_4xx(served: Served) -> None:
    alice = await served.sign_up("alice@example.com")
    token = alice["access_token"]
    assert (await served.post("/api/chat", {"message": "hi"}))[0] == 401
    status, body = await served.post("/api/chat", {"message": "hi"}, token="not-a-token")
    assert status == 401 and "invalid" in body["error"]
    expired = jwt.encode(
        {
            "sub": alice["account"]["id"],
            "tier": "free",
            "jti": "x",
            "iat": int(time.time()) - 3600,
            "exp": int(time.time()) - 60,
            "aud": "dexorder-gateway",
        },
        served.gw.sessions.secret,
        algorithm="HS256",
    )
    status, body = await served.post("/api/chat", {"message": "hi"}, token=expired)
    assert status == 401 and "expired" in body["error"]
    forged = jwt.encode(
        {
            "sub": alice["account"]["id"],
            "tier": "enterprise",
            "jti": "y",
            "iat": 1,
            "exp": 2**40,
            "aud": "dexorder-gateway",
        },
        "someone else's secret, long enough for HS256",
        algorithm="HS256",
    )
    assert (await served.post("/api/chat", {"message": "hi"}, token=forged))[0] == 401

    assert (await served.post("/api/chat", {"message": "  "}, token=token))[0] == 400
    assert (await served.post("/api/chat", {"msg": "hi"}, token=token))[0] == 400
    status, body = await served.post("/api/chat", {"message": "x" * 8001}, token=token)
    assert status == 413 and "8,000" in body["error"]
    status, body = await served.post(
        "/api/chat",
        data=b"{" + b" " * 70_000 + b"}",
        token=token,
        headers={"Content-Type": "application/json"},
    )
    assert status == 413
    status, _ = await served.post("/api/chat", data=b"[1, 2", token=token)
    assert status == 400

    served.gw.limits.tiers = {**served.gw.limits.tiers, "free": TierLimits(2, 200_000)}
    for _ in range(2):
        assert (await served.post("/api/chat", {"message": "my alerts"}, token=token))[0] == 200
    status, body = await served.post("/api/chat", {"message": "my alerts"}, token=token)
    assert status == 429 and "2 requests a minute" in body["error"]

    served.gw.limits.tiers = {**served.gw.limits.tiers, "free": TierLimits(1000, 0.01)}
    await served.gw.limits.spend(alice["account"]["id"], 10, 0.01)
    status, body = await served.post("/api/chat", {"message": "my alerts"}, token=token)
    assert status == 429 and "budget" in body["error"]


async def test_a_websocket_without_a_valid_token_is_refused(served: Served) -> None:
    url = served.url.replace("http", "ws") + "/api/chat/ws"
    for first in ({"type": "auth", "token": "nope"}, {"type": "message", "text": "hi"}):
        async with served.http.ws_connect(url) as ws:
            await ws.send_str(json.dumps(first))
            frame = json.loads((await ws.receive(timeout=10)).data)
            assert frame["type"] == "error" and frame["status"] == 401
            await ws.receive(timeout=10)
            assert ws.close_code == 4401
    alice = await served.sign_up("alice@example.com")
    async with served.socket(alice["access_token"]) as ws:
        await ws.ws.send_str("not json")
        frame = await ws.next()
        assert frame["type"] == "error" and frame["status"] == 400
        frames = await ws.ask("x" * 9000)
        assert frames[-1]["type"] == "error" and frames[-1]["status"] == 413
        # logging out ends what the open socket may do
        status, _ = await served.post(
            "/api/auth/logout",
            {"refresh_token": alice["refresh_token"]},
            token=alice["access_token"],
        )
        assert status == 204
        frames = await ws.ask("list my strategies")
        assert frames[-1]["type"] == "error" and frames[-1]["status"] == 401


async def test_personal_access_tokens_chat_until_revoked_at_the_gateway_and_the_agent(
    served: Served,
) -> None:
    from tests.gateway.test_isolation import agent_status, mcp_call

    alice = await served.sign_up("alice@example.com")
    status, pat = await served.post(
        "/api/tokens", {"name": "my laptop"}, token=alice["access_token"]
    )
    assert status == 201
    status, body = await served.post("/api/chat", {"message": "my alerts"}, token=pat["token"])
    assert status == 200 and "no alerts" in body["reply"]
    endpoint = await served.gw.provisioner.ensure(alice["account"]["id"], "free")
    assert not (await mcp_call(endpoint.mcp_url, pat["token"], "list_alerts")).is_error

    status, _ = await served.delete(f"/api/tokens/{pat['id']}", token=alice["access_token"])
    assert status == 204
    status, body = await served.post("/api/chat", {"message": "my alerts"}, token=pat["token"])
    assert status == 401 and "revoked" in body["error"]
    assert await agent_status(endpoint.mcp_url, pat["token"]) == 401
    status, body = await served.get("/api/tokens", token=alice["access_token"])
    assert body["tokens"][0]["revoked"] is True


async def test_dexorder_chat_speaks_as_the_local_person(served: Served) -> None:
    cfg = served.gw.cfg
    env = {"DEXORDER_HOME": str(cfg.home), "DEXORDER_GATEWAY__PORT": str(cfg.gateway.port)}
    code, out, errs = await run_cli(env, "chat", "list my strategies")
    assert code == 0, errs
    assert "[offline model]" in out and "sma_cross" in out
    assert "list_strategies" in errs  # tool progress, on stderr
    saved = messages_of(served, cfg.gateway.local_user)
    assert [(m["role"], m["channel"]) for m in saved] == [("user", "web"), ("assistant", "web")]
    assert saved[0]["text"] == "list my strategies"

    # no message: a conversation, one line at a time, until an empty line
    code, out, errs = await run_cli(
        env, "chat", stdin=b"show my positions\nwhat alerts do I have\n\n"
    )
    assert code == 0, errs
    assert "Cash 10,000.00" in out and "no alerts" in out

    env["DEXORDER_GATEWAY__PORT"] = "1"
    code, _, errs = await run_cli(env, "chat", "hi")
    assert code == 1 and "not reachable" in errs
    assert "Traceback" not in errs
