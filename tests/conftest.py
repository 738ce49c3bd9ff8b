from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.store import Database
from tests.postgres import new_database, postgres_server
from tests.redis_server import redis_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of the test session's own (loopback, free port, temp dir)."""
    with redis_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, once on SQLite and once on PostgreSQL (their SQL differs where it
    matters: ON CONFLICT, locking, JSON)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modelport.db'}"
    server: str = request.getfixturevalue("postgres_url")
    return new_database(server, "test")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """``database_url`` migrated to the newest schema."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.close()
