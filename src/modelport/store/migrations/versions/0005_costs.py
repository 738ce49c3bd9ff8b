"""Cost: the versioned price catalog and each replica's uptime.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(140), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("nanousd", sa.BigInteger, nullable=False),
        sa.Column("effective_from", _TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_prices_target", "prices", ["kind", "target", "unit", "effective_from"])
    op.create_table(
        "replica_uptime",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(16), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False),
        sa.Column("hardware", sa.String(64), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("seen_at", _TS, nullable=False),
        sa.Column("stopped_at", _TS, nullable=True),
    )
    op.create_index("ix_replica_uptime_started", "replica_uptime", ["started_at"])
    op.create_index("ix_replica_uptime_stopped", "replica_uptime", ["stopped_at"])


def downgrade() -> None:
    op.drop_index("ix_replica_uptime_stopped", "replica_uptime")
    op.drop_index("ix_replica_uptime_started", "replica_uptime")
    op.drop_table("replica_uptime")
    op.drop_index("ix_prices_target", "prices")
    op.drop_table("prices")
