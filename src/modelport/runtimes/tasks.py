"""Typed requests and results for the non-tensor tasks (generation, embedding, speech).

Runtimes work in these terms; the worker's protocol adapters (OpenAI-compatible) translate
between them and the wire, so a runtime never sees HTTP or JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Delta",
    "Embeddings",
    "GenerateRequest",
    "Generation",
    "GenerationStream",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "Transcription",
]


@dataclass(slots=True)
class Tool:
    """A function the model may call: its name, description and JSON Schema of arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool = False  # refuse schema keywords the grammar cannot enforce


@dataclass(slots=True)
class GenerateRequest:
    """A completion (``prompt`` or ``prompt_ids``) or a chat (``messages``).

    ``json_schema`` constrains the whole answer to JSON matching it (``{"type": "object"}``
    for any object). ``tool_choice`` is ``"auto"``, ``"required"``, ``"none"`` or the name
    of the one tool to call. ``logprobs`` asks for each token's log-probability and
    ``top_logprobs`` alternatives besides it.
    """

    prompt: str | None = None
    prompt_ids: list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    max_prompt_tokens: int = 0  # the server's cap; 0: the model's context
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    echo: bool = False  # completions: the answer starts with the prompt
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    json_schema: dict[str, Any] | None = None
    json_strict: bool = False  # refuse schema keywords the constraint cannot enforce
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"


@dataclass(slots=True)
class TokenLogprob:
    """One generated token: its text and bytes, log-probability and the top alternatives."""

    token: str
    data: bytes
    logprob: float
    top: list[tuple[str, bytes, float]] = field(default_factory=list)


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(slots=True)
class Delta:
    """One step of a stream: answer text, or the start (``call_id``, ``call_name``) or a
    piece (``arguments``) of a tool call; with the log-probabilities of its tokens."""

    content: str = ""
    call_id: str | None = None
    call_name: str | None = None
    arguments: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True)
class Generation:
    text: str
    finish_reason: str  # "stop", "length" or "tool_calls"
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True)
class GenerationStream:
    """Deltas as they are generated. ``completion_tokens`` counts the model tokens behind
    the deltas yielded so far (a delta may hold several when a character spans tokens), so
    usage stays exact however early the stream ends."""

    prompt_tokens: int
    tokens: AsyncIterator[Delta]
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
