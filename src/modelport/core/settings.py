"""One typed settings object; every field is also a ``MODELPORT_*`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Server settings. ``modelport serve`` flags override these field by field."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    home: Path = Field(default=Path(".modelport"), description="State directory.")
    database_url: str = Field(default="", description="SQLAlchemy URL; SQLite in home if empty.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8600, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest inference request body."
    )
    max_request_rows: int = Field(
        default=10_000, ge=1, description="Most rows (or images) in one V2 inference request."
    )
    max_tensor_elements: int = Field(
        default=16 * 1024 * 1024, ge=1, description="Most elements in one V2 input tensor."
    )
    max_image_pixels: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Most pixels (width x height) in one image given to a vision model.",
    )
    max_artifact_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024, ge=1024, description="Largest artifact upload."
    )
    worker_start_timeout_s: float = Field(default=120.0, gt=0)
    health_interval_s: float = Field(default=1.0, gt=0)
    health_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a busy replica may take to answer a probe."
    )
    upstream_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A request's deadline: queueing, retries and fallbacks included. Clients "
        "may ask for less with the X-Modelport-Timeout header.",
    )
    stream_chunk_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait between two chunks of a stream."
    )
    upstream_max_connections: int = Field(
        default=256, ge=1, description="Requests in flight to one replica or external server."
    )
    upstream_idle_timeout_s: float = Field(
        default=4.0,
        gt=0,
        description="Idle pooled connections are closed after this; keep it below the "
        "upstreams' keep-alive timeout (uvicorn: 5 s).",
    )
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest answer read from an upstream."
    )
    allow_internal_upstreams: bool = Field(
        default=False,
        description="Let external endpoints' URLs point at link-local or cloud-metadata "
        "addresses, or at Modelport's own address.",
    )
    rollout_tick_s: float = Field(
        default=0.5, gt=0, le=60, description="How often rollouts in progress are judged."
    )
    log_level: str = Field(default="info")
    demo_models: str = Field(
        default="", description="Comma-separated demos for 'serve --demo'; empty: all of them."
    )
    max_control_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest control-plane request body (artifact uploads have their own).",
    )
    max_artifact_files: int = Field(
        default=10_000, ge=1, description="Most files and directories in one artifact."
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Time a client has to send a whole request body (408 after it); for an "
        "artifact upload, the longest pause between two parts of it.",
    )
    artifact_upload_timeout_s: float = Field(
        default=3600.0, gt=0, description="Time a client has to send a whole artifact upload."
    )
    artifact_roots: str | None = Field(
        default=None,
        description="Directories, separated by ':', that a version's artifact_path may name "
        "files in. Unset: the directory the server starts in. Empty: none (upload instead). "
        "The server's home is never readable, except its demo directory.",
    )
    max_audio_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Longest recording one transcription request may hold (413 beyond it).",
    )
    max_prompt_tokens: int = Field(
        default=0,
        ge=0,
        description="Most tokens in one chat or completion prompt (400 beyond it); 0: as many "
        "as the model's context holds.",
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, description="Most texts in one embeddings request (400 beyond it)."
    )
    max_embedding_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="Most characters, all texts together, in one embeddings request.",
    )
    replica_busy_grace_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a replica that computes (its CPU time grows) may miss health "
        "probes before it is restarted as hung. An idle one is restarted after 6 misses.",
    )
    replica_sandbox: bool = Field(
        default=True,
        description="Keep model code in replicas from the server's home (admin token, "
        "secrets, database) with Linux Landlock, where the kernel has it. See security.md.",
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        description="A bearer token that may read /metrics (as the admin token may), to put "
        "in Prometheus's scrape config instead of the admin token.",
    )
    metering: bool = Field(
        default=True,
        description="Meter every request: the usage journal, metrics and drift sampling. Off "
        "only to measure what metering costs (bench/metering_overhead.py).",
    )
    slo_eval_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How often every endpoint's SLO (error budget, burn rates) is re-evaluated "
        "and SLO alerts opened or closed; also how soon a changed latency target applies.",
    )

    drift_sample_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of V2 inference calls whose inputs and outputs are sampled for "
        "drift (0: none).",
    )
    drift_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="How often drift is scored and stored."
    )
    drift_window_rows: int = Field(
        default=1000, ge=10, description="Live values per feature a revision's window keeps."
    )
    drift_min_rows: int = Field(
        default=300, ge=1, description="Live values a feature needs before it is judged."
    )
    drift_baseline_rows: int = Field(
        default=500,
        ge=10,
        description="First live values that become the reference of a feature with none "
        "stored (predicted classes without a prediction column, token counts, latency).",
    )
    drift_psi_warn: float = Field(default=0.1, gt=0, description="PSI from which a feature warns.")
    drift_psi_threshold: float = Field(
        default=0.2, gt=0, description="PSI from which a feature drifts."
    )
    drift_ks_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="KS significance level, divided by the number of input features.",
    )
    drift_ks_min_statistic: float = Field(
        default=0.1, ge=0, le=1, description="Smallest KS statistic that counts as drift."
    )
    drift_latency_factor: float = Field(
        default=1.5,
        gt=1,
        description="Latency drifts when a revision's p95 exceeds its baseline p95 this many "
        "times.",
    )
    usage_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days raw usage events are kept in the database (their minute, hour and "
        "day rollups are kept for good).",
    )
    usage_load_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the usage journal is loaded into the database.",
    )
    usage_segment_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=4096,
        description="Size at which the usage journal starts a new segment file.",
    )
    otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP collector to export traces to (e.g. http://127.0.0.1:4318; "
        "/v1/traces is added). Empty: no tracing, and no cost on the request path.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="'json': every process (server and replicas) logs one JSON object per "
        "line, with the request id of the request a line concerns.",
    )
    auth_failures_per_minute: int = Field(
        default=20,
        ge=0,
        description="Failed authentications from one address within a minute after which "
        "its requests are refused with 429 until the minute has passed. 0: off.",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (urlsafe base64 of 32 bytes) that encrypts secrets at rest. "
        "Unset: read from (or created in) $MODELPORT_HOME/secrets.key, mode 0600.",
    )

    audit_anchor: str = Field(
        default="",
        description="Where the audit chain's head is copied outside the database: a file "
        "(JSON lines, fsynced; empty: $MODELPORT_HOME/audit-anchors.jsonl), an http(s) URL "
        "it is POSTed to, or 'off'.",
    )
    audit_anchor_interval_s: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="How often the audit chain's head is anchored, when it moved.",
    )

    oidc_issuer: str = Field(
        default="",
        description="OpenID Connect issuer whose bearer tokens (RS256/ES256 JWTs) the control "
        "plane accepts, checked against the token's 'iss'. Empty: OIDC off.",
    )
    oidc_audience: str = Field(
        default="",
        description="The 'aud' an OIDC token must carry (the client id registered for "
        "Modelport). Required when MODELPORT_OIDC_ISSUER is set.",
    )
    oidc_jwks_url: str = Field(
        default="",
        description="Where the issuer's signing keys (JWKS) are fetched; cached, and fetched "
        "again for an unknown key id at most every 30 s. Empty: the 'jwks_uri' of "
        "ISSUER/.well-known/openid-configuration.",
    )
    oidc_user_claim: str = Field(
        default="sub",
        description="The OIDC token claim whose value names the Modelport user (and so its "
        "roles), e.g. 'sub', 'email' or 'preferred_username'.",
    )

    hardware_file: Path | None = Field(
        default=None,
        description="A YAML file of hardware types added to (or overriding) the built-in "
        "catalog. Unset: $MODELPORT_HOME/hardware.yaml when it exists.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis://host:port/db, rediss:// for TLS) where rate limit "
        "counters live, so that several gateways share them. Unset: each server counts in "
        "its own memory.",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        description="Longest wait for Redis on a request. After a failure, requests do not "
        "wait on Redis again for 5 s.",
    )
    limits_fail_open: bool = Field(
        default=True,
        description="When Redis cannot be reached: true admits requests unthrottled (a "
        "limiter outage does not stop the data plane), false refuses them with 503.",
    )
    budgets_fail_open: bool = Field(
        default=True,
        description="When Redis (the shared budget ledger) cannot be reached: true admits "
        "requests uncounted against budgets, false refuses them with 503.",
    )
    budget_default_output_tokens: int = Field(
        default=1024,
        ge=0,
        description="Output tokens a chat or completion call that sets no max_tokens is "
        "reserved for against its budgets (its real cost is charged when it ends).",
    )
    budget_check_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often budgets are checked for the 80% and 100% notices, and new "
        "days and months begun; caps from intents are reloaded every 5 s.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Worker processes and log lines must not depend on the server's working directory.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        # Without an audience, a token the issuer made for any other application would pass.
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError(
                "MODELPORT_OIDC_ISSUER is set without MODELPORT_OIDC_AUDIENCE: set the audience "
                "(the client id registered for Modelport) or unset the issuer"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'modelport.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin-token"

    @property
    def artifact_root_paths(self) -> tuple[Path, ...]:
        """The directories ``artifact_path`` may read from (see ``artifact_roots``)."""
        raw = str(Path.cwd()) if self.artifact_roots is None else self.artifact_roots
        return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
