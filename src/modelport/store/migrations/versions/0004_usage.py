"""Durable usage: raw usage events, their minute/hour/day rollups, journal offsets; key teams.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_DIMENSIONS = (
    "endpoint",
    "revision",
    "model_version",
    "task",
    "team",
    "project",
    "key_id",
    "customer",
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("team", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "usage_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_id", sa.String(32), nullable=False, unique=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(16), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("customer", sa.String(128), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("upstream_ms", sa.Float, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("audio_seconds", sa.Float, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("judged", sa.Boolean, nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_events_at", "usage_events", ["at"])
    op.create_table(
        "usage_rollups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("granularity", sa.String(8), nullable=False),
        sa.Column("bucket_start", _TS, nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(16), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("customer", sa.String(128), nullable=False),
        *(
            sa.Column(name, sa.BigInteger, nullable=False)
            for name in (
                "requests",
                "slo_requests",
                "errors",
                "slow",
                "input_tokens",
                "output_tokens",
            )
        ),
        sa.Column("audio_seconds", sa.Float, nullable=False),
        sa.Column("images", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("latency_ms_sum", sa.Float, nullable=False),
        sa.Column("upstream_ms_sum", sa.Float, nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("granularity", "bucket_start", *_DIMENSIONS),
    )
    op.create_index(
        "ix_usage_rollups_granularity_bucket", "usage_rollups", ["granularity", "bucket_start"]
    )
    op.create_table(
        "usage_offsets",
        sa.Column("segment", sa.String(128), primary_key=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_offsets")
    op.drop_index("ix_usage_rollups_granularity_bucket", "usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_events_at", "usage_events")
    op.drop_table("usage_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("team")
