"""Rate limits per key, project, team, customer and endpoint (C).

Revision ID: 0011
Revises: 0008
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by its part."""


def downgrade() -> None:
    """Filled in by its part."""
