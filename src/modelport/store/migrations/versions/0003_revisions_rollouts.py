"""Revisions, rollouts and their events; the intent each endpoint was applied from.

Every existing endpoint becomes revision 1 of itself, serving all of its traffic.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("intent", sa.JSON, nullable=True))
        batch.add_column(sa.Column("intent_digest", sa.String(71), nullable=True))
        batch.add_column(
            sa.Column("stable_revision", sa.Integer, nullable=False, server_default="1")
        )
    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "endpoint_id",
            sa.Integer,
            sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("runtime_options", sa.JSON, nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("batching", sa.JSON, nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("endpoint_id", "number"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "endpoint_id",
            sa.Integer,
            sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("from_revision", sa.Integer, nullable=False),
        sa.Column("to_revision", sa.Integer, nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("step_started_at", _TS, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "rollout_id",
            sa.Integer,
            sa.ForeignKey("rollouts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", _TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    # Each endpoint so far is one revision: its version, replicas and batching, as revision 1.
    op.execute(
        "INSERT INTO revisions (endpoint_id, number, version_id, runtime_options, replicas, "
        "batching, created_by, created_at) SELECT id, 1, version_id, '{}', replicas, batching, "
        "'migration', created_at FROM endpoints"
    )


def downgrade() -> None:
    for table in ("rollout_events", "rollouts", "revisions"):
        op.drop_table(table)
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("stable_revision")
        batch.drop_column("intent_digest")
        batch.drop_column("intent")
