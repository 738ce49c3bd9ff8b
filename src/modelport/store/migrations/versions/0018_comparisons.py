"""Stored ``modelport compare`` results (issue 11 F).

Revision ID: 0018
Revises: 0015
"""

from __future__ import annotations

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled by its part."""


def downgrade() -> None:
    """Filled by its part."""
