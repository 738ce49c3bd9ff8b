"""GGUF language models through llama.cpp (``llama-cpp-python``), for chat and completion.

Generation runs token by token in a thread, so that token counts are the model's own and a
stream stops as soon as its client leaves. Options: ``n_ctx`` (context length, default 2048),
``threads`` (default: all cores).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime, find_model_file
from modelport.runtimes.tasks import GenerateRequest, Generation, GenerationStream

__all__ = ["LlamaCppRuntime"]

_TEXT_SIGNATURE = Signature(
    inputs=[TensorSpec(name="prompt", datatype="BYTES", shape=[-1])],
    outputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
)
_DONE = object()


class LlamaCppRuntime(ModelRuntime):
    """One llama.cpp context per replica: it serves one request at a time."""

    max_concurrency = 1

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        path = find_model_file(artifact_dir, (".gguf",), options)
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise InvalidRequest(f"{path.name} is not a GGUF model file")
        return _TEXT_SIGNATURE

    async def load(self) -> None:
        options = self.settings.options
        path = find_model_file(self.settings.artifact_dir, (".gguf",), options)
        self._llm = await asyncio.to_thread(
            llama_cpp.Llama,
            model_path=str(path),
            n_ctx=int(options.get("n_ctx", 2048)),
            n_threads=int(options.get("threads", os.cpu_count() or 1)),
            verbose=False,
        )
        template = self._llm.metadata.get("tokenizer.chat_template")
        self._chat = (
            Jinja2ChatFormatter(template=template, eos_token="", bos_token="") if template else None
        )
        self._repeat_penalty = float(options.get("repeat_penalty", 1.1))
        self._lock = threading.Lock()  # one generation at a time on one context

    # -- prompt and limits --------------------------------------------------------------------

    def _prompt_tokens(self, request: GenerateRequest) -> tuple[list[int], int]:
        if request.messages is not None:
            if self._chat is None:
                raise InvalidRequest("this model has no chat template: use /v1/completions")
            prompt = self._chat(messages=request.messages).prompt  # type: ignore[arg-type]
            param = "messages"
        else:
            prompt = request.prompt or ""
            param = "prompt"
        tokens = self._llm.tokenize(prompt.encode(), add_bos=True, special=True)
        context = self._llm.n_ctx()
        if len(tokens) >= context:
            raise InvalidRequest(
                f"the prompt has {len(tokens)} tokens, but this model's context holds {context}: "
                "shorten it",
                param=param,
            )
        room = context - len(tokens)
        if request.max_tokens is not None and request.max_tokens > room:
            raise InvalidRequest(
                f"max_tokens {request.max_tokens} plus the prompt's {len(tokens)} tokens exceed "
                f"the context of {context}: ask for at most {room}",
                param="max_tokens",
            )
        return tokens, request.max_tokens or room

    def _run(
        self,
        prompt: list[int],
        budget: int,
        request: GenerateRequest,
        emit: Callable[[str, int], bool],
    ) -> str:
        """Generate in this (worker) thread; ``emit(text, tokens)`` returns False to stop."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, pending, produced = "", 0, 0
        eos = self._llm.token_eos()
        with self._lock:
            if request.seed is not None:
                self._llm.set_seed(request.seed)
            for token in self._llm.generate(
                prompt,
                temp=request.temperature,
                top_p=request.top_p,
                repeat_penalty=self._repeat_penalty,
                reset=True,
            ):
                if token == eos or llama_cpp.llama_token_is_eog(self._llm._model.vocab, token):
                    return "stop"
                produced += 1
                pending += 1
                piece = decoder.decode(self._llm.detokenize([token], special=False))
                if piece:
                    text += piece
                    for stop in request.stop:
                        if stop in text:
                            emit(piece[: len(piece) - (len(text) - text.index(stop))], pending)
                            return "stop"
                    if not emit(piece, pending):
                        return "stop"
                    pending = 0
                if produced >= budget:
                    return "length"
        return "stop"

    # -- the runtime interface ----------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> Generation:
        prompt, budget = self._prompt_tokens(request)
        parts: list[str] = []
        counted = [0]

        def collect(piece: str, tokens: int) -> bool:
            parts.append(piece)
            counted[0] += tokens
            return True

        finish = await asyncio.to_thread(self._run, prompt, budget, request, collect)
        return Generation("".join(parts), finish, len(prompt), counted[0])

    async def stream(self, request: GenerateRequest) -> GenerationStream:
        prompt, budget = self._prompt_tokens(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stopped = threading.Event()

        def push(piece: str, tokens: int) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, (piece, tokens))
            return not stopped.is_set()

        def produce() -> None:
            finish: str | Exception
            try:
                finish = self._run(prompt, budget, request, push)
            except Exception as exc:  # surfaces in the consumer
                finish = exc
            loop.call_soon_threadsafe(queue.put_nowait, (_DONE, finish))

        result = GenerationStream(prompt_tokens=len(prompt), tokens=_empty())

        async def tokens() -> AsyncIterator[str]:
            worker = loop.run_in_executor(None, produce)
            try:
                while True:
                    piece, value = await queue.get()
                    if piece is _DONE:
                        if isinstance(value, Exception):
                            raise value
                        result.finish_reason = value
                        return
                    result.completion_tokens += value
                    yield piece
            finally:
                stopped.set()  # the consumer left early: the thread stops at its next token
                await asyncio.shield(worker)

        result.tokens = tokens()
        return result


async def _empty() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover - makes this an async generator
