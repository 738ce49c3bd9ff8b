"""Wire models of the control-plane API (``XCreate`` in, ``XPublic`` out)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelport.backends import ReplicaStatus
from modelport.core.enums import EndpointStatus, RolloutState, Task
from modelport.core.names import MAX_VERSION
from modelport.core.signature import Signature
from modelport.runtimes.registry import REMOTE_RUNTIMES

__all__ = [
    "AliasSet",
    "ApplyRequest",
    "ApplyResult",
    "ArtifactPublic",
    "Batching",
    "Change",
    "EndpointCreate",
    "EndpointPublic",
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "KeyRotate",
    "ModelCreate",
    "ModelPublic",
    "RevisionPublic",
    "RolloutEventPublic",
    "RolloutPublic",
    "VersionCreate",
    "VersionPublic",
]


class _In(BaseModel):
    # Numbers are declared strict one by one (Field(strict=True)): a lax int takes true as 1
    # and "3" as 3, which a client never means; enums and dates stay lax, as JSON sends them
    # as strings.
    model_config = ConfigDict(extra="forbid")


class ModelCreate(_In):
    name: str = Field(examples=["breast-cancer"])
    task: Task
    description: str = Field(default="", max_length=2000)
    owner: str = Field(default="", max_length=64)


class VersionCreate(_In):
    runtime: str = Field(examples=["onnx"])
    artifact_digest: str | None = Field(
        default=None, description="Digest of an artifact uploaded with POST /artifacts."
    )
    artifact_path: str | None = Field(
        default=None, description="A file or directory on the server's own filesystem."
    )
    signature: Signature | None = Field(
        default=None, description="Inputs and outputs; derived from the artifact if omitted."
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, Any] = Field(default_factory=dict)
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    reference_digest: str | None = Field(
        default=None, description="Artifact holding a reference sample of training data."
    )

    @field_validator("metrics", "tags", "runtime_options")
    @classmethod
    def _plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Python's JSON parser takes NaN and Infinity; stored, they are not JSON to PostgreSQL
        # or to clients.
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("must be plain JSON: NaN and Infinity are not numbers") from None
        return value

    @model_validator(mode="after")
    def _one_artifact(self) -> VersionCreate:
        given = (self.artifact_digest is not None) + (self.artifact_path is not None)
        if self.runtime in REMOTE_RUNTIMES:
            if given:
                raise ValueError(f"runtime {self.runtime} is a URL: give no artifact")
        elif given != 1:
            raise ValueError("give exactly one of artifact_digest or artifact_path")
        return self


class AliasSet(_In):
    version: int = Field(strict=True, ge=1, le=MAX_VERSION)


class Batching(_In):
    """Adaptive batching for tabular and vision endpoints."""

    max_batch_size: int = Field(default=32, strict=True, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, strict=True, ge=0, le=1000)


class EndpointCreate(_In):
    name: str = Field(examples=["breast-cancer"])
    model: str = Field(description="NAME@ALIAS, NAME:VERSION, or NAME for the latest version.")
    replicas: int = Field(default=1, strict=True, ge=1, le=64)
    batching: Batching | None = Field(default=None, description="Merge concurrent requests.")


class KeyCreate(_In):
    project: str = Field(examples=["default"], description="The project the key belongs to.")
    name: str = Field(min_length=1, max_length=64)
    team: str = Field(
        default="",
        max_length=64,
        description="Must be the project's team if given (the key's team is its project's).",
    )
    scopes: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Endpoints the key may call; empty: every endpoint open to its project.",
    )
    expires_at: datetime | None = Field(default=None, description="When the key stops working.")
    permissions: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Data-plane privileges: pin, route_by_header, any_customer.",
    )
    customers: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Customers the key may name (X-Modelport-Customer, OpenAI 'user').",
    )


class KeyRotate(_In):
    grace: int = Field(
        default=3600,
        strict=True,
        ge=0,
        le=30 * 86400,
        description="Seconds the old key keeps working (at most 30 days).",
    )


class ArtifactPublic(BaseModel):
    digest: str
    size_bytes: int
    files: int


class VersionPublic(BaseModel):
    model: str
    version: int
    runtime: str
    artifact_digest: str
    reference_digest: str | None
    signature: Signature
    metrics: dict[str, Any]
    tags: dict[str, Any]
    runtime_options: dict[str, Any]
    aliases: list[str]
    created_by: str
    created_at: datetime


class ModelPublic(BaseModel):
    name: str
    task: Task
    description: str
    owner: str
    created_at: datetime
    aliases: dict[str, int]
    versions: list[VersionPublic]


class RevisionPublic(BaseModel):
    """One immutable revision: a model version and the configuration it runs with."""

    name: str  # r1, r2, ...
    model: str
    version: int
    runtime: str
    runtime_options: dict[str, Any]
    replicas: int
    batching: Batching | None
    created_by: str
    created_at: datetime
    running: bool = False
    traffic_percent: float = Field(default=0.0, description="Share of unpinned live traffic.")
    replica_status: list[ReplicaStatus] = Field(default_factory=list)


class EndpointPublic(BaseModel):
    name: str
    model_ref: str
    model: str
    version: int
    runtime: str
    replicas: int
    batching: Batching | None
    status: EndpointStatus
    replica_status: list[ReplicaStatus]
    url: str
    created_at: datetime
    stable_revision: str = "r1"
    revisions: list[RevisionPublic] = Field(
        default_factory=list, description="Revisions running now, with their traffic."
    )
    rollout: str | None = Field(default=None, description="State of a rollout in progress.")
    intent: dict[str, Any] | None = None
    autoscaling: dict[str, Any] | None = Field(
        default=None,
        description="When the intent's replicas may vary: the replicas running, the count the "
        "autoscaler wants, and why.",
    )
    outcome: str | None = Field(
        default=None, description="Why the endpoint exists: its applied intent's outcome."
    )


class RolloutEventPublic(BaseModel):
    at: datetime
    kind: str
    message: str
    data: dict[str, Any]


class RolloutPublic(BaseModel):
    id: int
    endpoint: str
    from_revision: str
    to_revision: str
    strategy: str
    state: RolloutState
    step: int = Field(description="Index into steps; -1 while the new revision starts.")
    steps: list[int]
    plan: dict[str, Any]
    reason: str
    created_by: str
    created_at: datetime
    step_started_at: datetime | None
    finished_at: datetime | None
    live: dict[str, Any] = Field(
        default_factory=dict,
        description="Traffic share, the step's window per revision and the shadow report.",
    )
    events: list[RolloutEventPublic]


class ApplyRequest(_In):
    intent: str = Field(description="The text of a modelport.yaml intent file.", max_length=65536)
    dry_run: bool = Field(default=False, description="Say what would change; change nothing.")
    filename: str = Field(default="modelport.yaml", max_length=256)


class Change(BaseModel):
    field: str
    before: Any = None
    after: Any = None


class ApplyResult(BaseModel):
    endpoint: str
    action: str = Field(description="created | updated | rollout | unchanged")
    dry_run: bool
    changes: list[Change]
    revision: str | None = Field(
        default=None, description="The revision created (or that would be)."
    )
    rollout: RolloutPublic | None = None
    summary: str


class KeyPublic(BaseModel):
    id: str
    prefix: str
    project: str
    name: str
    team: str = ""
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    scopes: list[str] = Field(default_factory=list)
    permissions: list[str] = Field(default_factory=list)
    customers: list[str] = Field(default_factory=list)
    rotated_from: str | None = None
    replaced_by: str | None = None
    created_by: str = ""


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret. Shown only in this response: store it now.")
