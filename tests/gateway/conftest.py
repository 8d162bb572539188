"""The accounts database on SQLite and on the running PostgreSQL, migrated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.accounts.db import engine_for, migrate
from gateway.accounts.store import Accounts
from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = engine_for(f"sqlite:///{tmp_path / 'accounts.db'}")
        migrate(eng)
        yield eng
        eng.dispose()
        return
    with fresh_database("dexorder_accounts") as url:
        eng = engine_for(url)
        try:
            migrate(eng)
            yield eng
        finally:
            eng.dispose()


@pytest.fixture
def accounts(engine: Engine) -> Accounts:
    return Accounts(engine)
