"""SQLAlchemy tables of governance: budgets. Portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["BudgetRow"]


class BudgetRow(Base):
    """The caps of one scope (``kind`` key, project, team, customer or endpoint), in nano-USD;
    NULL: that period is not capped. What was spent is not here: it is read from the usage
    rollups and counted live by the gateway's ledger."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    daily_nanousd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_nanousd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(140), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
