"""SQLAlchemy table of environments: where endpoints run. Portable across SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["EnvironmentRow"]


class EnvironmentRow(Base):
    """One environment created by an admin: its ``kind`` (shared, dedicated or isolated), the
    backend that runs its replicas, the hardware types it offers and the data sensitivities it
    accepts. ``memory_mb`` and ``cpus`` bound each replica of an isolated environment (NULL:
    no limit of that kind)."""

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # shared | dedicated | isolated
    backend: Mapped[str] = mapped_column(String(32), default="local")
    hardware: Mapped[list[Any]] = mapped_column(JSON)
    sensitivities: Mapped[list[Any]] = mapped_column(JSON)
    memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
