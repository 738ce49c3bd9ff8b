"""Join the planning branches (environments, bench profiles, comparisons) into one head.

Revision ID: 0019
Revises: 0016, 0017, 0018
"""

from __future__ import annotations

revision = "0019"
down_revision = ("0016", "0017", "0018")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo."""
