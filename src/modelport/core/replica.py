"""The contract between a backend that starts replicas and the worker that is one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelport.core.signature import Signature

__all__ = ["WORKER_TOKEN_HEADER", "ReplicaIsolation", "ReplicaLaunch", "ReplicaSpec"]

# Replicas answer only requests that carry their endpoint's secret, so that a local user
# cannot bypass the gateway's authentication by calling a replica's loopback port.
WORKER_TOKEN_HEADER = b"x-modelport-worker-token"


class ReplicaIsolation(BaseModel):
    """What an isolated environment's replica runs under, applied by the worker before it
    loads the model: an address-space limit, a CPU set, and no network but its listening
    socket. ``None`` for a limit: none of that kind."""

    model_config = ConfigDict(extra="forbid")

    memory_mb: int | None = Field(default=None, ge=64)
    cpus: int | None = Field(default=None, ge=1)
    network: Literal["none", "host"] = "none"


class ReplicaSpec(BaseModel):
    """What one replica loads and serves."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    revision: str = "r1"  # the endpoint's revision this replica serves; several can run at once
    model: str
    version: int
    runtime: str
    task: str = "tabular"
    artifact_dir: Path
    artifact_digest: str
    signature: Signature = Field(default_factory=Signature)
    options: dict[str, Any] = Field(default_factory=dict)
    max_body_bytes: int = 16 * 1024 * 1024
    batching: dict[str, Any] | None = None  # {max_batch_size, max_wait_ms}
    max_request_rows: int = Field(default=10_000, ge=1)  # caps of Settings, same names
    max_tensor_elements: int = Field(default=16 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=16 * 1024 * 1024, ge=1)
    max_audio_seconds: float = Field(default=300.0, gt=0)
    max_prompt_tokens: int = Field(default=0, ge=0)  # 0: the model's context
    max_embedding_inputs: int = Field(default=2048, ge=1)
    max_embedding_chars: int = Field(default=1_000_000, ge=1)
    max_concurrency: int = Field(default=0, ge=0, description="In-flight requests; 0: runtime's.")
    isolation: ReplicaIsolation | None = None  # set for an isolated environment's replicas

    @property
    def group(self) -> str:
        """The backend's name for this revision's replicas: ``endpoint@revision``."""
        return f"{self.endpoint}@{self.revision}"


class ReplicaLaunch(BaseModel):
    """What the supervisor hands a worker process on its standard input, as JSON.

    Not argv, which the kernel bounds (runtime options of a few hundred KB fail with "Argument
    list too long") and every local user can read in /proc; not the environment, which is
    bounded the same way and stays readable in ``/proc/<pid>/environ`` after the worker drops
    a variable.
    """

    model_config = ConfigDict(extra="forbid")

    spec: ReplicaSpec
    token: str  # the endpoint's secret that the gateway sends (WORKER_TOKEN_HEADER)
    fd: int  # the listening socket, inherited
    log_level: str = "info"
    hidden_dir: Path | None = None  # the server's home: out of the model code's reach
    log_format: str = "text"  # "text" or "json" (one object per line), as the server's
    otlp_endpoint: str = ""  # where to export spans (OTLP/HTTP); empty: no tracing
