"""Measured latency/throughput profiles from ``modelport bench`` (issue 11 E).

Revision ID: 0017
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bench_profiles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(16), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("hardware", sa.String(64), nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("machine", sa.JSON, nullable=False),
        sa.Column("points", sa.JSON, nullable=False),
        sa.Column("sample", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(140), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_bench_profiles_model", "bench_profiles", ["model", "model_version"])
    op.create_index("ix_bench_profiles_endpoint", "bench_profiles", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_bench_profiles_endpoint", "bench_profiles")
    op.drop_index("ix_bench_profiles_model", "bench_profiles")
    op.drop_table("bench_profiles")
