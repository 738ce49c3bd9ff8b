"""Drift: each model version's reference profile, and the latest score of each feature.

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "drift_profiles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("profile", sa.JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "drift_scores",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(16), nullable=False),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("psi", sa.Float, nullable=True),
        sa.Column("ks_statistic", sa.Float, nullable=True),
        sa.Column("ks_pvalue", sa.Float, nullable=True),
        sa.Column("live_rows", sa.Integer, nullable=False),
        sa.Column("reference_rows", sa.Integer, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("endpoint", "revision", "feature"),
    )
    op.create_index("ix_drift_scores_endpoint", "drift_scores", ["endpoint"])


def downgrade() -> None:
    op.drop_table("drift_scores")
    op.drop_table("drift_profiles")
