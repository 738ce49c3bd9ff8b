"""Stored ``modelport compare`` results (issue 11 F).

Revision ID: 0018
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The ``comparisons`` table: one row per compare run."""
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("intent_digest", sa.String(80), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(140), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_comparisons_endpoint", "comparisons", ["endpoint"])


def downgrade() -> None:
    """Drop the table and its index."""
    op.drop_index("ix_comparisons_endpoint", table_name="comparisons")
    op.drop_table("comparisons")
