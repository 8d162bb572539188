"""The chat checkpoints (functions/gateway/harness/checkpoints.py): PostgreSQL for
replicas (set up by two replicas at once without a fault) or in memory, and the sweep
that deletes threads left waiting for over an hour."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from gateway.harness.checkpoints import Checkpoints, open_checkpoints, postgres_conninfo
from tests.postgres import fresh_database


@pytest.fixture(params=["memory", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "memory":
        yield "sqlite:///unused.db"  # not PostgreSQL: in memory
        return
    with fresh_database() as url:
        yield url


async def _put(found: Checkpoints, thread: str, age: timedelta) -> None:
    checkpoint = empty_checkpoint()
    checkpoint["ts"] = (datetime.now(UTC) - age).isoformat()
    config: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    await found.saver.aput(config, checkpoint, {"source": "loop", "step": 0}, {})


async def test_threads_waiting_over_an_hour_are_swept(database_url: str | None) -> None:
    # two replicas starting at once both set the tables up
    both = await asyncio.gather(open_checkpoints(database_url), open_checkpoints(database_url))
    try:
        found = both[0]
        assert (found.pool is None) == (postgres_conninfo(database_url) is None)
        await _put(found, "u-abandoned", timedelta(hours=2))
        await _put(found, "u-waiting", timedelta(minutes=3))
        assert await found.sweep() == 1
        left = {item.config["configurable"]["thread_id"] async for item in found.saver.alist(None)}
        assert left == {"u-waiting"}
    finally:
        for each in both:
            await each.close()


def test_only_postgresql_urls_get_postgres_checkpoints() -> None:
    assert postgres_conninfo(None) is None
    assert postgres_conninfo("sqlite:////tmp/accounts.db") is None
    assert (
        postgres_conninfo("postgresql+psycopg2://postgres:s3cret@db:5432/dexorder")
        == "postgresql://postgres:s3cret@db:5432/dexorder"
    )
