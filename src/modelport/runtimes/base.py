"""The runtime plugin interface, after MLServer's ``MLModel``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelport.core.errors import InvalidRequest
from modelport.core.replica import ReplicaSpec
from modelport.core.signature import Signature
from modelport.runtimes.tasks import (
    Embeddings,
    GenerateRequest,
    Generation,
    GenerationStream,
    Transcription,
)

__all__ = ["ModelRuntime", "RuntimeSettings", "find_model_file"]


class RuntimeSettings(BaseModel):
    """Everything a runtime needs to load one model version."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = 1
    artifact_dir: Path
    signature: Signature = Field(default_factory=Signature)
    options: dict[str, Any] = Field(default_factory=dict)
    max_image_pixels: int = Field(default=16 * 1024 * 1024, ge=1)  # decompression-bomb cap
    max_audio_seconds: float = Field(default=300.0, gt=0)  # longest recording to transcribe


class ModelRuntime(ABC):
    """Loads one model and answers predictions on named numpy tensors.

    ``inspect`` runs once at registration, in the control plane: it proves the artifact can be
    read by this runtime and derives the signature, so that a broken artifact is refused with a
    clear error instead of crashing a replica later.
    """

    #: Where the supervisor probes a replica's readiness.
    readiness_path: str = "/v2/health/ready"

    #: Requests one replica works on at once; more wait in its queue. Models that cannot
    #: serve two requests at once (llama.cpp) say 1.
    max_concurrency: int = 8

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings

    @classmethod
    @abstractmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        """Check the artifact and return its signature."""

    @classmethod
    def replica_command(
        cls, spec: ReplicaSpec, host: str, port: int, token: str
    ) -> list[str] | None:
        """A command that *is* the replica (an external server such as vLLM), or None for a
        Modelport worker process."""
        return None

    @classmethod
    def replica_environment(cls, spec: ReplicaSpec, token: str) -> dict[str, str]:
        """Environment variables an external server needs besides the minimal ones every
        replica gets. Its secrets go here: a command line is readable by every local user."""
        return {}

    @abstractmethod
    async def load(self) -> None:
        """Load the model; the replica turns ready when this returns."""

    # A runtime implements the capabilities of its tasks; the rest answer "not supported".

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map validated input tensors to output tensors (tabular, vision, custom)."""
        raise self._unsupported("tensor inference")

    async def generate(self, request: GenerateRequest) -> Generation:
        """Generate a whole completion (chat, completion)."""
        raise self._unsupported("text generation")

    async def stream(self, request: GenerateRequest) -> GenerationStream:
        """Generate token by token (chat, completion)."""
        raise self._unsupported("streaming")

    async def embed(self, texts: list[str]) -> Embeddings:
        """Embed texts (embedding)."""
        raise self._unsupported("embeddings")

    async def transcribe(self, audio: np.ndarray, sample_rate: int) -> Transcription:
        """Transcribe mono float32 audio (asr)."""
        raise self._unsupported("transcription")

    def _unsupported(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"runtime {type(self).__name__} does not support {what}")

    async def unload(self) -> None:
        """Release the model. The default drops nothing; runtimes holding devices override it."""
        return None


def find_model_file(artifact_dir: Path, suffixes: tuple[str, ...], options: dict[str, Any]) -> Path:
    """The model file inside an artifact: ``options['file']`` or the only file with a suffix."""
    if name := options.get("file"):
        path = (artifact_dir / str(name)).resolve()
        if not path.is_relative_to(artifact_dir.resolve()) or not path.is_file():
            raise InvalidRequest(f"runtime option file={name!r} is not a file in the artifact")
        return path
    found = sorted(p for p in artifact_dir.rglob("*") if p.is_file() and p.suffix in suffixes)
    if len(found) != 1:
        raise InvalidRequest(
            f"the artifact must hold exactly one {'/'.join(suffixes)} file, found {len(found)}; "
            "name it with the runtime option 'file'",
            found=[p.name for p in found],
        )
    return found[0]
