"""SQLAlchemy tables of governance: policies (every version kept) and rollout approvals.
Portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["PolicyVersionRow", "RolloutApprovalRow"]


class PolicyVersionRow(Base):
    """One version of a policy, never changed once written. A policy's newest version is its
    state: disabling it writes a version with ``enabled`` false (and the same text), so the
    history says who disabled it and when."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        Index("ix_policy_versions_name", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RolloutApprovalRow(Base):
    """Someone approved a rollout's promotion (four-eyes); one row per person and rollout."""

    __tablename__ = "rollout_approvals"
    __table_args__ = (UniqueConstraint("rollout_id", "actor"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
