"""Where a turn waits for the person's "yes": LangGraph checkpoints every replica reads.

An order the model asks for is held by the turn graph's ``interrupt()`` (see
``graph.py``); the person's next message, on whichever replica it arrives, resumes it
(``Command(resume=text)``) from the checkpoint of their thread (thread id = the person's
id). So the checkpointer is shared by the replicas:

* PostgreSQL (``gateway.database_url`` is a ``postgresql`` URL): langgraph's
  ``AsyncPostgresSaver`` over a psycopg 3 pool, in the accounts database (its own
  ``checkpoint*`` tables, set up by whichever replica starts first, under an advisory
  lock since replicas start together).
* Otherwise (one machine, ``dexorder up``: one gateway process) ``InMemorySaver``: a
  confirmation waiting across a restart of the gateway is lost, which cancels it (the
  safe side: nothing is placed), and there is nothing more to install, migrate or keep.

Not Redis, although the replicas share one: langgraph-checkpoint-redis needs Redis
Stack's RedisJSON and RediSearch modules, which Debian's (and most managed plain) Redis
lacks; the accounts database is PostgreSQL in every multi-replica deployment anyway.

Only waiting turns keep a thread: the harness deletes a person's thread when their turn
ends without waiting, and a sweep (every ten minutes) deletes threads whose newest
checkpoint is older than an hour (an abandoned question; it counts as cancelled after
five minutes anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

log = structlog.get_logger(part="gateway")

#: Threads whose newest checkpoint is older than this are deleted.
THREAD_TTL_S = 3600.0
SWEEP_EVERY_S = 600.0
#: pg_advisory_lock key under which a replica creates or migrates the tables
_SETUP_LOCK = 0x6465786F  # "dexo"


def postgres_conninfo(database_url: str | None) -> str | None:
    """``database_url`` (SQLAlchemy's form) as psycopg 3 connection info, if PostgreSQL."""
    if not database_url:
        return None
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Checkpoints:
    """The checkpointer and what it runs on; :meth:`close` when the gateway stops."""

    saver: BaseCheckpointSaver[Any]
    pool: Any = None  # psycopg_pool.AsyncConnectionPool with PostgreSQL
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    def start_sweeping(self, every_s: float = SWEEP_EVERY_S) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(every_s))

    async def _sweep_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except Exception:  # the database away for a moment: the next sweep tries again
                log.exception("sweeping old chat checkpoints failed")

    async def sweep(self, older_than_s: float = THREAD_TTL_S) -> int:
        """Delete threads whose newest checkpoint is older than ``older_than_s``; how many."""
        newest: dict[str, datetime] = {}
        async for item in self.saver.alist(None):
            thread = str(item.config["configurable"]["thread_id"])
            ts = datetime.fromisoformat(item.checkpoint["ts"])
            if thread not in newest or ts > newest[thread]:
                newest[thread] = ts
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        old = [thread for thread, ts in newest.items() if ts < cutoff]
        for thread in old:
            await self.saver.adelete_thread(thread)
        if old:
            log.info("old chat checkpoints deleted", threads=len(old))
        return len(old)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.pool is not None:
            await self.pool.close()


async def _take_setup_lock(conn: Any) -> None:
    """Take the advisory lock under which the tables are set up, trying again and again
    rather than waiting in ``pg_advisory_lock``: a replica waiting there is a transaction
    in progress, which the migrations' ``CREATE INDEX CONCURRENTLY`` (run by the replica
    holding the lock) waits for: a deadlock."""
    while True:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_SETUP_LOCK,))
        row = await cursor.fetchone()
        if row is not None and row["ok"]:
            return
        await asyncio.sleep(0.1)


async def open_checkpoints(database_url: str | None) -> Checkpoints:
    """PostgreSQL checkpoints for ``database_url`` if it is PostgreSQL, else in memory."""
    conninfo = postgres_conninfo(database_url)
    if conninfo is None:
        found = Checkpoints(InMemorySaver())
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=10,
            # what AsyncPostgresSaver expects of its connections
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
        )
        await pool.open(wait=True, timeout=30)
        try:
            async with pool.connection() as conn:
                await _take_setup_lock(conn)
                try:
                    await AsyncPostgresSaver(conn).setup()
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
        except BaseException:
            await pool.close()
            raise
        found = Checkpoints(AsyncPostgresSaver(pool), pool)
    found.start_sweeping()
    return found
