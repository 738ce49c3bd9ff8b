"""SQLAlchemy tables of governance: limit. Portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["LimitRow"]


class LimitRow(Base):
    """Rate limits set through the API on one scope: a key, project, team, customer or
    endpoint. NULL: no limit of that kind (an endpoint's intent may still set one)."""

    __tablename__ = "limits"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # key | project | team | customer | endpoint
    name: Mapped[str] = mapped_column(String(140))
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
