"""SQLAlchemy tables of governance: the audit log (a hash chain) and its head. Portable across
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["AuditEntryRow", "AuditHeadRow"]

# SQLite only autoincrements INTEGER primary keys; PostgreSQL gets a BIGINT.
_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntryRow(Base):
    """One entry of the audit log. ``hash`` covers every other column and ``prev_hash`` (see
    governance/audit_chain.py); entries are only ever appended."""

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str] = mapped_column(String(128), default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    before: Mapped[str] = mapped_column(String(64), default="")
    after: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_entries_at", "at"),
        Index("ix_audit_entries_actor", "actor"),
        Index("ix_audit_entries_target", "target"),
    )


class AuditHeadRow(Base):
    """The chain head: one row (id 1). An append updates it first, in the entry's own
    transaction, so appends from any process are serialised on its row lock."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(_BIGINT)
    hash: Mapped[str] = mapped_column(String(64))
