"""SQLAlchemy tables of governance: identity. Portable across SQLite and PostgreSQL."""

from __future__ import annotations

from modelport.store.tables import Base, UTCDateTime, utcnow  # noqa: F401

__all__: list[str] = []
