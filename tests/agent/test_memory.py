"""Conversation memory with real sentence embeddings from the embedding service."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from aiohttp import web

from agent.memory import ConversationMemory
from agent.person import PersonAgent
from dexorder.config import Settings
from dexorder.embeddings import EmbeddingClient, EmbeddingUnavailable
from dexorder.tokens import embedder_token, token_keys
from launcher.ephemeral import free_port
from tests.agent.conftest import serve_agent
from tests.agent.test_mcp_server import data, error
from tests.gateway.served import serve_app

pytestmark = pytest.mark.integration


async def test_the_service_embeds_and_refuses_bad_requests(embedder: tuple[str, Path]) -> None:
    url, home = embedder
    token = embedder_token(token_keys(Settings(home=home)), "alice")
    async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.post("/embed", json={"texts": ["x"]})).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert (await http.post("/embed", json={"texts": "x"}, headers=auth)).status_code == 400
        assert (await http.post("/embed", content=b"{", headers=auth)).status_code == 400
        assert (
            await http.post("/embed", json={"texts": ["x"] * 257}, headers=auth)
        ).status_code == 413
        r = await http.post(
            "/embed",
            json={
                "texts": [
                    "buy bitcoin when the RSI is oversold",
                    "enter long when RSI drops below 30",
                    "my cat likes tuna",
                ]
            },
            headers=auth,
        )
        assert r.status_code == 200
        a, b, c = r.json()["vectors"]
    assert len(a) == 384 and abs(sum(x * x for x in a) - 1) < 1e-4

    def cos(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert cos(a, b) > cos(a, c) + 0.2  # meaning, not words


async def test_messages_are_saved_and_found_by_meaning(
    embedder: tuple[str, Path], tmp_path: Path
) -> None:
    url, home = embedder
    cfg = Settings(home=home, embedder={"port": int(url.rsplit(":", 1)[1])})
    async with serve_agent(cfg) as agent, agent.client() as c:
        for role, text in [
            ("user", "I want to trade ETH breakouts on the 4h chart"),
            ("assistant", "Noted: breakouts on ETH, four-hour candles."),
            ("user", "Please keep my risk per trade under one percent"),
            ("user", "What's a good pizza place?"),
        ]:
            saved = data(
                await c.call_tool("save_message", {"role": role, "text": text, "channel": "web"})
            )
            assert saved["text"] == text and saved["role"] == role
        found = data(
            await c.call_tool(
                "search_conversation",
                {"query": "position sizing and how much I can lose", "limit": 2},
            )
        )
        assert found["matches"][0]["text"] == "Please keep my risk per trade under one percent"
        only_agent = data(
            await c.call_tool("search_conversation", {"query": "ethereum", "role": "assistant"})
        )
        assert {m["role"] for m in only_agent["matches"]} == {"assistant"}
        bad = error(await c.call_tool("save_message", {"role": "system", "text": "x"}))
        assert "Input should be 'user' or 'assistant'" in bad


async def test_messages_saved_while_the_embedder_is_down_are_indexed_later(
    embedder: tuple[str, Path], tmp_path: Path
) -> None:
    url, home = embedder
    down = PersonAgent(Settings(home=home, embedder={"port": free_port()}), "bob")
    await down.memory.save("user", "I only trade on weekends", "telegram")
    assert down.memory.messages()[0].text == "I only trade on weekends"
    assert await down.memory.flush() is False
    await down.memory.aclose()
    up = PersonAgent(Settings(home=home, embedder={"port": int(url.rsplit(":", 1)[1])}), "bob")
    matches = await up.memory.search("which days do I trade")
    assert matches[0].text == "I only trade on weekends"
    await up.memory.aclose()


async def test_a_failing_embedder_is_not_asked_again_at_once_and_none_is_never_asked(
    tmp_path: Path,
) -> None:
    asked: list[int] = []

    async def embed(request: web.Request) -> web.Response:
        asked.append(len((await request.json())["texts"]))
        return web.json_response({"error": "broken"}, status=500)

    app = web.Application()
    app.router.add_post("/embed", embed)
    async with serve_app(app) as url:
        memory = ConversationMemory(tmp_path / "m", EmbeddingClient(url, lambda: "t"))
        for text in ("buy the dip", "sell the rip", "hold"):
            await memory.save("user", text)
        with pytest.raises(EmbeddingUnavailable):
            await memory.search("what do I do")
        with pytest.raises(EmbeddingUnavailable):
            await memory.search("what do I do")
        await memory.aclose()
    # one try (all pending messages), then none until the retry time: not one per save
    # and search, each of which a turn would wait for
    assert len(asked) == 1 and asked[0] >= 1
    assert [m.text for m in memory.messages()] == ["buy the dip", "sell the rip", "hold"]

    off = ConversationMemory(tmp_path / "off", None)  # the platform runs no embedder
    await off.save("assistant", "noted")
    with pytest.raises(EmbeddingUnavailable, match="off"):
        await off.search("noted")
    assert await off.flush() is False
    await off.aclose()
