"""One typed settings object; every field is also a ``MODELPORT_*`` environment variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
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
    max_artifact_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024, ge=1024, description="Largest artifact upload."
    )
    worker_start_timeout_s: float = Field(default=120.0, gt=0)
    health_interval_s: float = Field(default=1.0, gt=0)
    health_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a busy replica may take to answer a probe."
    )
    upstream_timeout_s: float = Field(default=60.0, gt=0)
    rollout_tick_s: float = Field(
        default=0.5, gt=0, le=60, description="How often rollouts in progress are judged."
    )
    log_level: str = Field(default="info")
    demo_models: str = Field(
        default="", description="Comma-separated demos for 'serve --demo'; empty: all of them."
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Worker processes and log lines must not depend on the server's working directory.
        return value.expanduser().resolve()

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
