"""The gateway's harness against the loopback Anthropic Messages API and a real agent: the
set-up the harness tests share, and one turn run with the frames it sent kept."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dexorder.config import Settings
from dexorder.contracts.chat import ServerFrame, encode
from dexorder.tokens import token_keys
from gateway.harness.router import Meter, ModelRouter
from gateway.harness.turn import Harness, TurnResult
from tests.agent.conftest import Agent, serve_agent
from tests.gateway.loopback_anthropic import API_KEY, MessagesApi, serve_messages_api


@dataclass
class Harnessed:
    harness: Harness
    agent: Agent
    api: MessagesApi
    cfg: Settings

    async def turn(
        self, text: str, meter: Meter | None = None
    ) -> tuple[TurnResult, list[dict[str, Any]]]:
        return await run_turn(self.harness, self.agent, text, meter)


async def run_turn(
    harness: Harness, agent: Agent, text: str, meter: Meter | None = None
) -> tuple[TurnResult, list[dict[str, Any]]]:
    """One turn of ``agent``'s person (tier free, web): its result and every frame sent."""
    sent: list[dict[str, Any]] = []

    async def send(frame: ServerFrame) -> None:
        sent.append(json.loads(encode(frame)))

    result = await harness.turn(
        user=agent.person.user,
        tier="free",
        channel="web",
        text=text,
        mcp_url=agent.url,
        send=send,
        meter=meter,
    )
    return result, sent


@contextlib.asynccontextmanager
async def harnessed(tmp_path: Path, lake_days: int = 0, **gateway: Any) -> AsyncIterator[Harnessed]:
    """A harness on the loopback Messages API (``gateway`` settings added) and an agent
    with no embedder; ``lake_days``: that many days of hourly BTC in the lake first."""
    async with serve_messages_api() as (url, api):
        cfg = Settings(
            home=tmp_path / "home",
            embedder={"enabled": False},
            gateway={"anthropic_api_key": API_KEY, "anthropic_base_url": url, **gateway},
        )
        if lake_days:
            from tests.agent.conftest import fill_lake

            fill_lake(cfg, days=lake_days)
        async with serve_agent(cfg) as agent:
            harness = Harness(cfg, token_keys(cfg), ModelRouter(cfg.gateway, API_KEY), None)
            try:
                yield Harnessed(harness, agent, api, cfg)
            finally:
                await harness.close()
