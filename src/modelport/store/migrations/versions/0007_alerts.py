"""Alert webhooks and alert episodes (an alert is sent once per episode, across restarts).

Revision ID: 0007
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_webhooks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "alert_episodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("open_key", sa.String(255), nullable=True, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("opened_at", _TS, nullable=False),
        sa.Column("closed_at", _TS, nullable=True),
        sa.Column("open_delivery", sa.String(8), nullable=False),
        sa.Column("close_delivery", sa.String(8), nullable=True),
    )
    op.create_index("ix_alert_episodes_key", "alert_episodes", ["key"])
    op.create_index("ix_alert_episodes_opened_at", "alert_episodes", ["opened_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_episodes_opened_at", "alert_episodes")
    op.drop_index("ix_alert_episodes_key", "alert_episodes")
    op.drop_table("alert_episodes")
    op.drop_table("alert_webhooks")
