"""Reading an LLM's shape from a GGUF file's header, without reading its weights.

GGUF (llama.cpp's format, versions 2 and 3): magic ``GGUF``, version, tensor count, metadata
count, then typed key/value metadata (``general.architecture``, ``<arch>.block_count``, ...),
then tensor infos (name, shape, type, offset); the weights follow. Only the header is read and
every count and length is bounded, so a hostile file cannot make this allocate or loop much.
"""

from __future__ import annotations

from pathlib import Path

from modelport.core.errors import InvalidRequest
from modelport.planning.llm import LlmModel

__all__ = ["read_llm_model"]


def read_llm_model(path: Path) -> LlmModel:
    """The ``LlmModel`` a GGUF file describes (header metadata only; no weights read).

    A file that is not GGUF, or whose header is truncated or absurd, is ``InvalidRequest``."""
    raise InvalidRequest(f"{path.name}: GGUF reading is not implemented yet", param="model")
