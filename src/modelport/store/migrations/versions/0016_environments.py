"""Environments: kind, backend, hardware offered, sensitivities accepted (issue 11 B).

Seeds the two defaults every installation starts with: ``sandbox`` (shared, public and
internal data) and ``production`` (dedicated, every sensitivity). Stored intents that name
another environment need nothing migrated: apply refuses them until an admin creates it.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "environments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("hardware", sa.JSON, nullable=False),
        sa.Column("sensitivities", sa.JSON, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=True),
        sa.Column("cpus", sa.Integer, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    now = datetime.now(UTC)
    seed = {"backend": "local", "hardware": ["cpu"], "created_by": "system", "created_at": now}
    op.bulk_insert(
        table,
        [
            {"name": "sandbox", "kind": "shared", "sensitivities": ["public", "internal"], **seed},
            {
                "name": "production",
                "kind": "dedicated",
                "sensitivities": ["public", "internal", "confidential", "restricted"],
                **seed,
            },
        ],
    )


def downgrade() -> None:
    op.drop_table("environments")
