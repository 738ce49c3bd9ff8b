"""Teams, projects, users and their role bindings (A).

Team ``default`` and project ``default`` are created, and a project (in team ``default``)
for every project name already used by an endpoint's intent or an API key, so that an
upgraded installation keeps serving what it served.

Revision ID: 0009
Revises: 0008
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    teams = op.create_table(
        "teams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("team", sa.String(64), sa.ForeignKey("teams.name"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("disabled_at", _TS, nullable=True),
    )
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "team",
            sa.String(64),
            sa.ForeignKey("teams.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("user_id", "team", name="uq_role_bindings_user_team"),
    )
    now = datetime.now(UTC)
    op.bulk_insert(teams, [{"name": "default", "created_at": now}])
    bind = op.get_bind()
    names = {"default"}
    names.update(row[0] for row in bind.execute(sa.text("SELECT project FROM api_keys")))
    for (intent,) in bind.execute(
        sa.select(sa.column("intent", sa.JSON)).select_from(sa.table("endpoints"))
    ):
        if isinstance(intent, dict) and isinstance(intent.get("project"), str):
            names.add(intent["project"])
    op.bulk_insert(
        projects,
        [{"name": name, "team": "default", "created_at": now} for name in sorted(names) if name],
    )


def downgrade() -> None:
    op.drop_table("role_bindings")
    op.drop_table("users")
    op.drop_table("projects")
    op.drop_table("teams")
