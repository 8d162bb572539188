"""A fresh database on the running PostgreSQL (the server `.ci/run` starts), for one test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg2

#: The running server: local, trust authentication, user postgres.
ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"


@contextlib.contextmanager
def fresh_database(prefix: str = "dexorder_test") -> Iterator[str]:
    """A new database, dropped after (its connections ended); yields its SQLAlchemy URL
    (``postgresql+psycopg2://…``). A random name: parallel test workers never meet."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
