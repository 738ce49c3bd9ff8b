"""Text embeddings with sentence-transformers on the CPU (a model directory as artifact)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime
from modelport.runtimes.tasks import Embeddings

__all__ = ["SentenceTransformersRuntime"]


class SentenceTransformersRuntime(ModelRuntime):
    """Option ``batch_size`` (default 32). Token counts come from the model's own tokenizer."""

    max_concurrency = 4

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        if (
            not (artifact_dir / "modules.json").is_file()
            and not (artifact_dir / "config.json").is_file()
        ):
            raise InvalidRequest(
                "a sentence-transformers artifact is the model's directory (with modules.json)"
            )
        return Signature(
            inputs=[TensorSpec(name="input", datatype="BYTES", shape=[-1])],
            outputs=[TensorSpec(name="embedding", datatype="FP32", shape=[-1, -1])],
        )

    async def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = await asyncio.to_thread(
            SentenceTransformer, str(self.settings.artifact_dir), device="cpu"
        )
        self._batch = int(self.settings.options.get("batch_size", 32))

    @property
    def embedding_dimensions(self) -> int | None:
        """The length of this model's vectors, when the model says."""
        dimensions = self._model.get_sentence_embedding_dimension()
        return None if dimensions is None else int(dimensions)

    def _embed(self, texts: list[str]) -> Embeddings:
        limit = self._model.max_seq_length
        encoded = self._model.tokenizer(texts, truncation=False)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        for index, length in enumerate(lengths):
            # The model would silently embed only the first tokens: refuse, as OpenAI does.
            if limit is not None and length > limit:
                raise InvalidRequest(
                    f"input[{index}] has {length} tokens; this model reads at most {limit}: "
                    "split or shorten it",
                    param=f"input[{index}]",
                )
        vectors = self._model.encode(
            texts, batch_size=self._batch, convert_to_numpy=True, show_progress_bar=False
        )
        return Embeddings(vectors=np.asarray(vectors, dtype=np.float32), tokens=sum(lengths))

    async def embed(self, texts: list[str]) -> Embeddings:
        return await asyncio.to_thread(self._embed, texts)
