"""Policies as code, versioned; rollout approvals (F).

Revision ID: 0014
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_policy_versions_name", "policy_versions", ["name"])
    op.create_table(
        "rollout_approvals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "rollout_id",
            sa.Integer,
            sa.ForeignKey("rollouts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.UniqueConstraint("rollout_id", "actor"),
    )


def downgrade() -> None:
    op.drop_table("rollout_approvals")
    op.drop_index("ix_policy_versions_name", "policy_versions")
    op.drop_table("policy_versions")
