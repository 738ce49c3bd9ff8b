"""API keys: scopes, expiry, rotation, data-plane permissions (B).

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by its part."""


def downgrade() -> None:
    """Filled in by its part."""
