"""RAG over Qdrant with real embeddings (platform docs for all, notes for their owner only),
and delete-my-data removing the account, the agent's files and events, and the vectors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dexorder.config import Settings
from dexorder.embeddings import EmbeddingClient
from dexorder.tokens import embedder_token, token_keys
from gateway.accounts.models import DeliveredEvent
from gateway.harness.knowledge import GLOBAL, KnowledgeBase, chunks
from tests.gateway.served import Served, alert_event, gateway_settings, serve_gateway
from tests.gateway.test_isolation import send_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def knowledge(embedder: tuple[str, Path], tmp_path: Path) -> AsyncIterator[KnowledgeBase]:
    url, home = embedder
    keys = token_keys(Settings(home=home))
    kb = KnowledgeBase(
        EmbeddingClient(url, lambda: embedder_token(keys, "gateway")), path=tmp_path / "qdrant"
    )
    yield kb
    await kb.close()


async def test_docs_are_found_by_meaning_and_notes_only_by_their_owner(
    knowledge: KnowledgeBase,
) -> None:
    added = await knowledge.load_folder()
    assert added > 5
    assert await knowledge.load_folder() == 0  # unchanged docs are not embedded again

    found = await knowledge.search("alice", "how do I stop losses in my strategy?")
    assert found[0].user_id == GLOBAL and "stop_loss" in found[0].text

    await knowledge.add("alice", "note", "Alice keeps her savings in Dogecoin and hates leverage.")
    mine = await knowledge.search("alice", "what coin does she hold her savings in?")
    assert mine[0].user_id == "alice" and "Dogecoin" in mine[0].text
    theirs = await knowledge.search("bob", "what coin does she hold her savings in?")
    assert all(s.user_id == GLOBAL for s in theirs) and theirs

    assert await knowledge.forget_person("alice") == 1
    assert all(s.user_id == GLOBAL for s in await knowledge.search("alice", "Dogecoin savings"))


def test_docs_are_cut_at_headings_and_kept_short() -> None:
    doc = "# A\n\n" + "\n\n".join("p" * 500 for _ in range(5)) + "\n\n# B\n\nshort"
    parts = chunks(doc, limit=1200)
    assert parts[-1] == "# B\n\nshort"
    assert all(len(p) <= 1200 + 500 for p in parts) and len(parts) >= 3


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        yield s


async def test_delete_my_data(served: Served) -> None:
    alice = await served.sign_up("alice@example.com")
    bob = await served.sign_up("bob@example.com")
    a_id = alice["account"]["id"]
    async with served.socket(alice["access_token"]) as ws:
        await ws.ask("set an alert at 70k")
        event = alert_event(served.gw, a_id, "e-1", ticker="BINANCE:BTC/USDT")
        await send_event(served.gw.events.endpoint, event)
        await ws.until("event")
    await served.post("/api/chat", {"message": "my alerts"}, token=bob["access_token"])
    agent_dir = served.gw.cfg.agent_dir(a_id)
    assert (agent_dir / "workspace").is_dir()

    assert (await served.delete("/api/me", token=bob["access_token"] + "x"))[0] == 401
    status, body = await served.delete("/api/me", token=alice["access_token"])
    assert status == 200 and body["deleted"] == a_id
    assert not agent_dir.exists()
    assert served.gw.provisioner.state(a_id) == "stopped"
    with Session(served.gw.accounts.engine) as s:
        assert not s.scalars(select(DeliveredEvent).where(DeliveredEvent.account_id == a_id)).all()
    status, _ = await served.post(
        "/api/auth/login", {"email": "alice@example.com", "password": "correct horse battery"}
    )
    assert status == 401
    assert (await served.get("/api/me", token=alice["access_token"]))[0] == 401
    # bob is untouched
    assert served.gw.cfg.agent_dir(bob["account"]["id"]).is_dir()
    assert (await served.get("/api/me", token=bob["access_token"]))[0] == 200


async def test_what_alice_asks_to_remember_reaches_her_prompts_and_never_bobs(
    embedder: tuple[str, Path], tmp_path: Path
) -> None:
    from gateway.harness.router import ModelRouter
    from gateway.harness.turn import Harness
    from tests.agent.conftest import serve_agent
    from tests.gateway.loopback_anthropic import API_KEY, serve_messages_api
    from tests.gateway.loopback_harness import run_turn

    url, home = embedder
    async with serve_messages_api() as (api_url, api):
        cfg = Settings(
            home=home,
            embedder={"port": int(url.rsplit(":", 1)[1])},
            gateway={"anthropic_base_url": api_url},
        )
        kb = KnowledgeBase(
            EmbeddingClient(url, lambda: embedder_token(token_keys(cfg), "gateway")),
            path=tmp_path / "kb",
        )
        await kb.load_folder()
        harness = Harness(cfg, token_keys(cfg), ModelRouter(cfg.gateway, API_KEY), kb)
        try:
            async with serve_agent(cfg, "alice_kb") as alice, serve_agent(cfg, "bob_kb") as bob:
                api.replies = [
                    [
                        {
                            "type": "tool_use",
                            "id": "toolu_r",
                            "name": "remember",
                            "input": {"fact": "Alice keeps her savings in Dogecoin."},
                        }
                    ],
                    [{"type": "text", "text": "Noted."}],
                    [{"type": "text", "text": "Dogecoin."}],
                    [{"type": "text", "text": "I do not know."}],
                ]
                for agent, text in (
                    (alice, "Remember: my savings are in Dogecoin"),
                    (alice, "Which coin holds my savings?"),
                    (bob, "Which coin holds my savings?"),
                ):
                    await run_turn(harness, agent, text)
                assert "remember" in {t["name"] for t in api.requests[0]["tools"]}
                alice_prompt, bob_prompt = api.requests[2]["system"], api.requests[3]["system"]
                assert "Alice keeps her savings in Dogecoin." in alice_prompt
                assert "Dogecoin" not in bob_prompt
                assert "platform docs" in bob_prompt  # the global knowledge reaches everyone
        finally:
            await harness.close()
