"""Wire models of the control-plane API (``XCreate`` in, ``XPublic`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelport.backends import ReplicaStatus
from modelport.core.enums import EndpointStatus, Task
from modelport.core.signature import Signature
from modelport.runtimes.registry import REMOTE_RUNTIMES

__all__ = [
    "AliasSet",
    "ArtifactPublic",
    "Batching",
    "EndpointCreate",
    "EndpointPublic",
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "ModelCreate",
    "ModelPublic",
    "VersionCreate",
    "VersionPublic",
]


class _In(BaseModel):
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
    version: int = Field(ge=1)


class Batching(_In):
    """Adaptive batching for tabular and vision endpoints."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)


class EndpointCreate(_In):
    name: str = Field(examples=["breast-cancer"])
    model: str = Field(description="NAME@ALIAS, NAME:VERSION, or NAME for the latest version.")
    replicas: int = Field(default=1, ge=1, le=64)
    batching: Batching | None = Field(default=None, description="Merge concurrent requests.")


class KeyCreate(_In):
    project: str = Field(examples=["default"])
    name: str = Field(min_length=1, max_length=64)


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


class KeyPublic(BaseModel):
    id: str
    prefix: str
    project: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret. Shown only in this response: store it now.")
