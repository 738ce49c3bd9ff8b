"""SQLAlchemy table of ``modelport compare`` results. Portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["ComparisonRow"]


class ComparisonRow(Base):
    """One comparison of candidates for an endpoint's intent, as it was measured: the result
    is kept whole (JSON) since it is read back as a report, never queried field by field."""

    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(128), index=True)
    # The intent the candidates were judged against (its SLO, traffic and budget): a later
    # intent with other targets makes this comparison's meets_slo/meets_budget stale.
    intent_digest: Mapped[str] = mapped_column(String(80))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(140), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
