"""Upgrading an installation to teams and projects keeps what it served working: every project
an endpoint's intent or an API key names becomes a project of team ``default``. On SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from modelport.control import identity
from modelport.store import Database

_MIGRATIONS = Path(identity.__file__).parents[1] / "store" / "migrations"


@pytest.fixture
def url(database_url: str) -> str:
    """An empty database (SQLite, PostgreSQL) that the test migrates step by step."""
    return database_url


def _upgrade(database: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = database.engine
    command.upgrade(config, revision)


def test_projects_in_use_survive_the_upgrade(url: str) -> None:
    database = Database(url)
    _upgrade(database, "0008")  # an installation from before teams
    now = datetime.now(UTC)
    with database.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO models (id, name, task, description, owner, created_at) "
                "VALUES (1, 'm', 'tabular', '', '', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            sa.text(
                "INSERT INTO model_versions (id, model_id, version, runtime, artifact_digest, "
                "signature, metrics, tags, runtime_options, created_by, created_at) VALUES "
                "(1, 1, 1, 'onnx', 'sha256:x', '{}', '{}', '{}', '{}', 'admin', :now)"
            ),
            {"now": now},
        )
        for n, project in enumerate(("search", None, "default")):
            intent = "null" if project is None else f'{{"project": "{project}"}}'
            connection.execute(
                sa.text(
                    "INSERT INTO endpoints (id, name, model_ref, version_id, replicas, intent, "
                    "stable_revision, created_at) VALUES (:id, :name, 'm:1', 1, 1, "
                    f"'{intent}', 1, :now)"
                ),
                {"id": n + 1, "name": f"ep-{n}", "now": now},
            )
        for n, project in enumerate(("ads", "search")):
            connection.execute(
                sa.text(
                    "INSERT INTO api_keys (id, prefix, key_hash, project, name, team, "
                    "created_at) VALUES (:id, 'mp_x', :hash, :project, 'k', '', :now)"
                ),
                {"id": f"key_{n}", "hash": f"h{n}", "project": project, "now": now},
            )
    database.migrate()
    with database.session() as session:
        assert identity.project_teams(session) == {
            "ads": "default",
            "default": "default",
            "search": "default",
        }
        assert [team.name for team in identity.list_teams(session)] == ["default"]
    database.close()


def test_a_fresh_installation_has_team_and_project_default(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'new.db'}")
    database.migrate()
    with database.session() as session:
        assert identity.project_team(session, "default") == "default"
    database.close()
