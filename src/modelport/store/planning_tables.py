"""SQLAlchemy tables of planning: measured latency/throughput profiles (``modelport bench``).
Portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelport.store.tables import Base, UTCDateTime, utcnow

__all__ = ["BenchProfileRow"]


class BenchProfileRow(Base):
    """One ``modelport bench`` run: a revision's latency and throughput at each concurrency,
    on the machine it ran on. Never changed once written. The planner reads the profiles of a
    model version (``model``, ``model_version``), whatever endpoint measured them: the same
    artifact on the same hardware answers alike."""

    __tablename__ = "bench_profiles"
    __table_args__ = (
        Index("ix_bench_profiles_model", "model", "model_version"),
        Index("ix_bench_profiles_endpoint", "endpoint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32))
    hardware: Mapped[str] = mapped_column(String(64))
    replicas: Mapped[int] = mapped_column(Integer)  # replicas the load was spread over
    duration_s: Mapped[float] = mapped_column(Float)  # per concurrency level
    # {cpu, cores, memory_gb, platform, python}: a profile means little on another machine.
    machine: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{concurrency, requests, rps, p50_ms, p95_ms, p99_ms, errors}], per replica, in order.
    points: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sample: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what one call sent
    created_by: Mapped[str] = mapped_column(String(140), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
