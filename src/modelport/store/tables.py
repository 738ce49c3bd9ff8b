"""SQLAlchemy tables. Kept portable: nothing here is specific to SQLite or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ROLLUP_DIMENSIONS",
    "ROLLUP_SUMS",
    "AlertEpisodeRow",
    "AlertWebhookRow",
    "ApiKeyRow",
    "Base",
    "DriftProfileRow",
    "DriftScoreRow",
    "EndpointRow",
    "ModelAliasRow",
    "ModelRow",
    "ModelVersionRow",
    "PriceRow",
    "ReplicaUptimeRow",
    "RevisionRow",
    "RolloutEventRow",
    "RolloutRow",
    "UsageEventRow",
    "UsageOffsetRow",
    "UsageRollupRow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    versions: Mapped[list[ModelVersionRow]] = relationship(
        back_populates="model", order_by="ModelVersionRow.version"
    )
    aliases: Mapped[list[ModelAliasRow]] = relationship(back_populates="model")


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    runtime: Mapped[str] = mapped_column(String(64))
    artifact_digest: Mapped[str] = mapped_column(String(71))
    reference_digest: Mapped[str | None] = mapped_column(String(71), nullable=True)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    runtime_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    model: Mapped[ModelRow] = relationship(back_populates="versions")


class ModelAliasRow(Base):
    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    alias: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))

    model: Mapped[ModelRow] = relationship(back_populates="aliases")
    version: Mapped[ModelVersionRow] = relationship()


class EndpointRow(Base):
    """The stable name clients call. ``version_id``, ``replicas`` and ``batching`` are what the
    endpoint was last asked to run (its newest revision's); ``stable_revision`` is the revision
    that serves when no rollout is moving traffic."""

    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model_ref: Mapped[str] = mapped_column(String(140))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    batching: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    intent: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    intent_digest: Mapped[str | None] = mapped_column(String(71), nullable=True)
    stable_revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    version: Mapped[ModelVersionRow] = relationship()
    revisions: Mapped[list[RevisionRow]] = relationship(
        back_populates="endpoint", order_by="RevisionRow.number", cascade="all, delete-orphan"
    )
    rollouts: Mapped[list[RolloutRow]] = relationship(
        back_populates="endpoint", order_by="RolloutRow.id", cascade="all, delete-orphan"
    )


class RevisionRow(Base):
    """One model version plus the configuration it runs with. Never changed once written."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("endpoint_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    runtime_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    batching: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    endpoint: Mapped[EndpointRow] = relationship(back_populates="revisions")
    version: Mapped[ModelVersionRow] = relationship()

    @property
    def label(self) -> str:
        return f"r{self.number}"


class RolloutRow(Base):
    """Moving an endpoint's traffic from one revision to another, step by step."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    from_revision: Mapped[int] = mapped_column(Integer)
    to_revision: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(16))
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # steps, interval, SLO
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer, default=-1)  # index into steps; -1: warming up
    step_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    endpoint: Mapped[EndpointRow] = relationship(back_populates="rollouts")
    events: Mapped[list[RolloutEventRow]] = relationship(
        back_populates="rollout", order_by="RolloutEventRow.id", cascade="all, delete-orphan"
    )


class RolloutEventRow(Base):
    """What happened in a rollout and why, with the numbers that decided it."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    rollout: Mapped[RolloutRow] = relationship(back_populates="events")


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    # The project's team, copied at creation: usage, limits and budgets are kept per team.
    team: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # After this the gateway refuses the key (401 naming the expiry); a rotated key gets
    # now + grace here.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Endpoint names the key may call; empty: every endpoint open to its project.
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Data-plane privileges: "pin", "route_by_header", "any_customer".
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Customers the key may name (X-Modelport-Customer, OpenAI ``user``).
    customers: Mapped[list[str]] = mapped_column(JSON, default=list)
    rotated_from: Mapped[str | None] = mapped_column(String(32), nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_by: Mapped[str] = mapped_column(String(128), default="", server_default="")


class UsageEventRow(Base):
    """One metered request, as loaded from the gateway's journal; kept for the retention."""

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The gateway-made idempotency key: loading a journal line twice stores it once.
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    request_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(32))
    project: Mapped[str] = mapped_column(String(64))
    team: Mapped[str] = mapped_column(String(64))
    customer: Mapped[str] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    upstream_ms: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    audio_seconds: Mapped[float] = mapped_column(Float)
    images: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean)
    judged: Mapped[bool] = mapped_column(Boolean)
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)


#: The dimensions a usage rollup row is keyed by (besides granularity and bucket).
ROLLUP_DIMENSIONS = (
    "endpoint",
    "revision",
    "model_version",
    "task",
    "team",
    "project",
    "key_id",
    "customer",
)
#: The additive sums of a usage rollup row.
ROLLUP_SUMS = (
    "requests",
    "slo_requests",
    "errors",
    "slow",
    "input_tokens",
    "output_tokens",
    "audio_seconds",
    "images",
    "rows",
    "latency_ms_sum",
    "upstream_ms_sum",
    "cost_nanousd",
)


class UsageRollupRow(Base):
    """Sums of usage events per minute, hour or day and per combination of dimensions.

    Reports read these, never the raw events, so a month answers from ~30 day rows per
    combination. Every column is NOT NULL (``""`` for none) so the unique key really is one.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (
        UniqueConstraint("granularity", "bucket_start", *ROLLUP_DIMENSIONS),
        Index("ix_usage_rollups_granularity_bucket", "granularity", "bucket_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    granularity: Mapped[str] = mapped_column(String(8))
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime)
    endpoint: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32))
    team: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    customer: Mapped[str] = mapped_column(String(128))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    slo_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    slow: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    images: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    upstream_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    cost_nanousd: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageOffsetRow(Base):
    """How far the loader has read each journal segment (advanced with the rows it loaded)."""

    __tablename__ = "usage_offsets"

    segment: Mapped[str] = mapped_column(String(128), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)


class PriceRow(Base):
    """One price of one unit for an endpoint, a model version (``name:3``) or a hardware type.

    Never updated: a new price is a new row, in force from its ``effective_from`` (never in
    the past) until a newer one for the same target and unit starts."""

    __tablename__ = "prices"
    __table_args__ = (Index("ix_prices_target", "kind", "target", "unit", "effective_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # endpoint | model_version | hardware
    target: Mapped[str] = mapped_column(String(140))
    unit: Mapped[str] = mapped_column(String(32))
    nanousd: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReplicaUptimeRow(Base):
    """One replica slot of a revision, from when it was deployed to when it was stopped.

    ``stopped_at`` is NULL while it runs; ``seen_at`` is advanced every minute while it does,
    so that after a crash the interval is closed at the last time it was known to run."""

    __tablename__ = "replica_uptime"
    __table_args__ = (
        Index("ix_replica_uptime_started", "started_at"),
        Index("ix_replica_uptime_stopped", "stopped_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(String(16))
    replica: Mapped[int] = mapped_column(Integer)
    hardware: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AlertWebhookRow(Base):
    """Where alert notices go. ``secret`` signs each notice and is never shown again."""

    __tablename__ = "alert_webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)  # encrypted (governance/secrets.py)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertEpisodeRow(Base):
    """One stretch of time an alert was open, and whether its notices went out.

    ``open_key`` is the key while the episode is open and NULL after: unique, so two
    episodes of one key can never be open at once (NULLs never collide)."""

    __tablename__ = "alert_episodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), index=True)
    open_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # pending | sent | failed; close_delivery is NULL while the episode is open.
    open_delivery: Mapped[str] = mapped_column(String(8), default="pending")
    close_delivery: Mapped[str | None] = mapped_column(String(8), nullable=True)


class DriftProfileRow(Base):
    """A model version's reference profile for drift (``observability.drift.Profile``), made
    from its reference data at registration; bounded in size whatever the data's."""

    __tablename__ = "drift_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), unique=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DriftScoreRow(Base):
    """The latest drift score of one feature of one endpoint revision (replaced each round,
    so the table stays as small as the features scored)."""

    __tablename__ = "drift_scores"
    __table_args__ = (UniqueConstraint("endpoint", "revision", "feature"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[str] = mapped_column(String(16))
    feature: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))  # input | output | usage | latency
    status: Mapped[str] = mapped_column(String(16))
    psi: Mapped[float | None] = mapped_column(Float, nullable=True)
    ks_statistic: Mapped[float | None] = mapped_column(Float, nullable=True)
    ks_pvalue: Mapped[float | None] = mapped_column(Float, nullable=True)
    live_rows: Mapped[int] = mapped_column(Integer, default=0)
    reference_rows: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
