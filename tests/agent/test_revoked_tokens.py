"""An agent refuses revoked tokens written where the gateway writes them: its
``state/revoked_tokens`` (one machine) and beside its own tokens (the Secret on Knative)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from dexorder.config import Settings
from dexorder.tokens import (
    AgentTokens,
    embedder_token,
    mint_token,
    token_keys,
    verify_token,
    write_agent_tokens,
)
from tests.agent.conftest import serve_agent

pytestmark = pytest.mark.integration


async def test_ids_beside_the_agents_tokens_are_refused_as_those_in_its_state(
    tmp_path: Path,
) -> None:
    mounted = tmp_path / "var-run-dexorder-tokens"  # as the Secret is mounted on Knative
    cfg = Settings(home=tmp_path / "home", agent={"tokens_file": str(mounted / "tokens.json")})
    keys = token_keys(cfg)
    write_agent_tokens(
        mounted / "tokens.json",
        AgentTokens(service=mint_token(keys, "alice"), embedder=embedder_token(keys, "alice")),
    )
    in_secret, in_state, kept = (mint_token(keys, "alice", "pat") for _ in range(3))
    (mounted / "revoked_tokens").write_text(verify_token(keys, in_secret).token_id + "\n")
    async with serve_agent(cfg) as agent, httpx2.AsyncClient() as http:
        (agent.person.state_dir / "revoked_tokens").write_text(
            verify_token(keys, in_state).token_id + "\n"
        )

        async def status(token: str) -> int:
            r = await http.post(agent.url, json={}, headers={"Authorization": f"Bearer {token}"})
            return r.status_code

        assert await status(in_secret) == 401
        assert await status(in_state) == 401
        assert await status(kept) not in (401, 403)
