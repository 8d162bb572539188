"""The accounts database on SQLite and on the running PostgreSQL, migrated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Engine

from gateway.accounts.db import engine_for, migrate
from gateway.accounts.store import Accounts


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = engine_for(f"sqlite:///{tmp_path / 'accounts.db'}")
        migrate(eng)
        yield eng
        eng.dispose()
        return
    name = f"dexorder_accounts_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    eng = engine_for(f"postgresql+psycopg2://postgres@127.0.0.1/{name}")
    try:
        migrate(eng)
        yield eng
    finally:
        eng.dispose()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def accounts(engine: Engine) -> Accounts:
    return Accounts(engine)
