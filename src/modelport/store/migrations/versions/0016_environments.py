"""Environments: kind, backend, hardware offered, sensitivities accepted (issue 11 B).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled by its part."""


def downgrade() -> None:
    """Filled by its part."""
