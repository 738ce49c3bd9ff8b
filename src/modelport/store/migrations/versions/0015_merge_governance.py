"""Join the governance branches (identity, keys, limits, budgets, audit, policies) into one
head again.

Revision ID: 0015
Revises: 0009, 0010, 0011, 0012, 0013, 0014
"""

from __future__ import annotations

revision = "0015"
down_revision = ("0009", "0010", "0011", "0012", "0013", "0014")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo."""
