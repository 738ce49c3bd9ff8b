"""Typed requests and results for the non-tensor tasks (generation, embedding, speech).

Runtimes work in these terms; the worker's protocol adapters (OpenAI-compatible) translate
between them and the wire, so a runtime never sees HTTP or JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Embeddings", "GenerateRequest", "Generation", "GenerationStream", "Transcription"]


@dataclass(slots=True)
class GenerateRequest:
    """A completion (``prompt``) or a chat (``messages``)."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(slots=True)
class Generation:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class GenerationStream:
    """Text pieces as they are generated. ``completion_tokens`` counts the model tokens behind
    the pieces yielded so far (a piece may hold several when a character spans tokens), so
    usage stays exact however early the stream ends."""

    prompt_tokens: int
    tokens: AsyncIterator[str]
    completion_tokens: int = 0
    finish_reason: str = "stop"  # final once ``tokens`` is exhausted


@dataclass(slots=True)
class Embeddings:
    vectors: np.ndarray  # [N, dims], float32
    tokens: int


@dataclass(slots=True)
class Transcription:
    text: str
    duration_s: float
    segments: list[dict[str, Any]] = field(default_factory=list)
