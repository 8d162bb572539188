"""A person's agent served over streamable HTTP on a free port, and MCP clients for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from agent.app import start_http
from agent.person import PersonAgent
from dexorder.config import Settings
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import OhlcBatch
from dexorder.tokens import mint_token, token_keys
from launcher.ephemeral import free_port
from services.exchange_emulator.simulator import DEFAULT_SYMBOLS, MarketSimulator
from streaming.lake_rows import PendingBatch
from streaming.lake_writer import commit_batch

D0 = 1_704_067_200_000  # 2024-01-01
HOUR = 3_600_000


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", agent={"sandbox": {"cpu_s": 5, "wall_s": 20}})


def fill_lake(cfg: Settings, days: int = 30) -> None:
    """Hourly BTC candles from the emulator's market, written as the lake writer does."""
    rows = MarketSimulator(seed=42).klines(DEFAULT_SYMBOLS[0], HOUR, D0, D0 + days * 24 * HOUR)
    batch = PendingBatch()
    batch.add_ohlc(
        OhlcBatch(
            request_id="test",
            ticker="BINANCE:BTC/USDT",
            timeframe="1h",
            rows=[
                (int(t), float(o), float(h), float(lo), float(c), float(v), 1)
                for t, o, h, lo, c, v, _ in rows
            ],
        )
    )
    commit_batch(ohlc_table(open_catalog(cfg)), batch)


def first_text(result: CallToolResult) -> str:
    """The text of a tool result's first block: the agent answers (and refuses) in text."""
    first = result.content[0]
    assert isinstance(first, TextContent), first
    return first.text


class Agent:
    """A served agent: its URL, its person, and a way to connect as anyone."""

    def __init__(self, cfg: Settings, person: PersonAgent, url: str) -> None:
        self.cfg, self.person, self.url = cfg, person, url

    def token(self, user: str | None = None, **kw: Any) -> str:
        return mint_token(token_keys(self.cfg), user or self.person.user, **kw)

    @contextlib.asynccontextmanager
    async def client(self, token: str | None = None) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(self.url, http_client=http)) as c,
        ):
            yield c


@contextlib.asynccontextmanager
async def serve_agent(cfg: Settings, user: str = "alice") -> AsyncIterator[Agent]:
    """``user``'s agent served over HTTP on a free port while the block runs."""
    person = PersonAgent(cfg, user)
    port = free_port()
    server = await start_http(person, "127.0.0.1", port)
    try:
        yield Agent(cfg, person, f"http://127.0.0.1:{port}/mcp")
    finally:
        await server.stop()


@pytest.fixture
async def agent(cfg: Settings) -> AsyncIterator[Agent]:
    async with serve_agent(cfg) as served:
        yield served
