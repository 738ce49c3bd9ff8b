from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import postgres_server
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
