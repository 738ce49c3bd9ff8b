"""The audit log: a hash chain and its head (E).

Revision ID: 0013
Revises: 0008
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0013"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by its part."""


def downgrade() -> None:
    """Filled in by its part."""
