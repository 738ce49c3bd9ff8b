"""Measured latency/throughput profiles from ``modelport bench`` (issue 11 E).

Revision ID: 0017
Revises: 0015
"""

from __future__ import annotations

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled by its part."""


def downgrade() -> None:
    """Filled by its part."""
