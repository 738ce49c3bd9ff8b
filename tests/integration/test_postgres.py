"""The whole server on PostgreSQL instead of SQLite: same commands, same API."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from tests.integration.conftest import BREAST_CANCER_ONLY, start_server, stop_server
from tests.postgres import new_database

pytestmark = pytest.mark.integration


def test_serve_demo_on_postgresql(tmp_path, postgres_url: str) -> None:
    url = new_database(postgres_url, "serve_demo")
    server = start_server(
        tmp_path / "home", "--demo", env={**BREAST_CANCER_ONLY, "MODELPORT_DATABASE_URL": url}
    )
    try:
        with server.client() as admin:
            admin.wait_ready("breast-cancer")
            key = admin.create_key("default", "pg")["key"]
        with server.client(key) as user:
            outputs = user.infer("breast-cancer", {"input": np.ones((3, 30), np.float32)})
            assert outputs["probabilities"].shape == (3, 2)
    finally:
        stop_server(server)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        names = connection.execute("SELECT name FROM endpoints").fetchall()
        events = connection.execute("SELECT endpoint, rows FROM usage_events").fetchall()
        rolled = connection.execute(
            "SELECT granularity, requests, rows FROM usage_rollups ORDER BY granularity"
        ).fetchall()
    assert names == [("breast-cancer",)]  # the state really lives in PostgreSQL
    # The usage loader (its own process) stored the request there too, once, on shutdown
    # at the latest.
    assert events == [("breast-cancer", 3)]
    assert rolled == [("day", 1, 3), ("hour", 1, 3), ("minute", 1, 3)]
