"""GGUF language models through llama.cpp (``llama-cpp-python``), for chat and completion.

Generation runs token by token in a thread, so that token counts are the model's own and a
stream stops as soon as its client leaves. Structured output (a JSON Schema) and tool calls
are constrained by a llama.cpp grammar; ``logit_bias`` by a logits processor; penalties and
the seed go to llama.cpp's sampler; log-probabilities are read from the logits each token was
sampled from. Options: ``n_ctx`` (context length, default 2048), ``threads`` (default: all
cores), ``repeat_penalty`` (default 1.1).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jinja2
import llama_cpp
import numpy as np
from llama_cpp import LogitsProcessorList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime, find_model_file
from modelport.runtimes.json_grammar import response_grammar, tool_grammar
from modelport.runtimes.tasks import (
    Delta,
    GenerateRequest,
    Generation,
    GenerationStream,
    TokenLogprob,
    ToolCall,
)
from modelport.runtimes.tool_calls import ToolCallParser, render_messages

__all__ = ["LlamaCppRuntime"]

_TEXT_SIGNATURE = Signature(
    inputs=[TensorSpec(name="prompt", datatype="BYTES", shape=[-1])],
    outputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
)
_DONE = object()
_SEED_RANGE = 2**32 - 1  # llama.cpp reads the seed as uint32 and 2**32 - 1 as "random"


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
        context = int(options.get("n_ctx", 2048))
        self._llm = await asyncio.to_thread(
            llama_cpp.Llama,
            model_path=str(path),
            n_ctx=context,
            n_threads=int(options.get("threads", os.cpu_count() or 1)),
            # Penalties count every token generated so far, as OpenAI's do, not the last 64.
            last_n_tokens_size=context,
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
            tools = request.tools if request.tool_choice != "none" else []
            messages = render_messages(request.messages, tools)
            try:
                prompt = self._chat(messages=messages).prompt  # type: ignore[arg-type]
            except jinja2.TemplateError as exc:  # e.g. "roles must alternate"
                raise InvalidRequest(
                    f"this model's chat template refuses the messages: {exc}", param="messages"
                ) from exc
            tokens = self._llm.tokenize(prompt.encode(), add_bos=True, special=True)
            param = "messages"
        elif request.prompt_ids is not None:
            vocab = self._llm.n_vocab()
            for index, token in enumerate(request.prompt_ids):
                if not 0 <= token < vocab:
                    raise InvalidRequest(
                        f"prompt[{index}] = {token} is not a token of this model "
                        f"(0 to {vocab - 1})",
                        param=f"prompt[{index}]",
                    )
            tokens, param = list(request.prompt_ids), "prompt"
        else:
            prompt, param = request.prompt or "", "prompt"
            tokens = self._llm.tokenize(prompt.encode(), add_bos=True, special=True)
        if not tokens:  # llama.cpp cannot start from nothing, and this model adds no BOS
            raise InvalidRequest(f"'{param}' holds no tokens: give some text", param=param)
        context = self._llm.n_ctx()
        limit = min(context - 1, request.max_prompt_tokens or context)
        if len(tokens) > limit:
            raise InvalidRequest(
                f"the prompt has {len(tokens)} tokens, but this model's context holds {context} "
                f"and prompts may have at most {limit}: shorten it",
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

    def _grammar(self, request: GenerateRequest) -> LlamaGrammar | None:
        """The grammar that constrains this request, checked by llama.cpp's own parser."""
        if request.tools and request.tool_choice != "none":
            text = tool_grammar(request.tools, choice=request.tool_choice)
            param = "tools"
        elif request.json_schema is not None:
            param = "response_format.json_schema.schema"
            text = response_grammar(request.json_schema, strict=request.json_strict, param=param)
        else:
            return None
        # An unparsable grammar would give llama.cpp a null sampler and crash the replica.
        probe = llama_cpp.llama_sampler_init_grammar(self._llm._model.vocab, text.encode(), b"root")
        if not probe:
            raise InvalidRequest(
                f"'{param}' cannot be enforced by llama.cpp's grammar", param=param
            )
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(text, verbose=False)

    def _bias(self, request: GenerateRequest) -> LogitsProcessorList | None:
        if not request.logit_bias:
            return None
        vocab = self._llm.n_vocab()
        for token in request.logit_bias:
            if not 0 <= token < vocab:
                raise InvalidRequest(
                    f"logit_bias names token {token}, but this model's tokens are 0 to {vocab - 1}",
                    param="logit_bias",
                )
        ids = np.array(list(request.logit_bias), dtype=np.intp)
        values = np.array(list(request.logit_bias.values()), dtype=np.float32)

        def bias(_input_ids: Any, scores: Any) -> Any:
            # The first sampler of the chain sees every token in id order.
            scores[ids] += values
            return scores

        return LogitsProcessorList([bias])

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        """The log-probability of ``token`` under the logits it was just sampled from (the
        model's own distribution, before penalties, bias, grammar and temperature)."""
        vocab = self._llm.n_vocab()
        pointer = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(vocab,)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best: list[tuple[str, bytes, float]] = []
        if top:
            ids = np.argpartition(-logprobs, top)[:top]
            for alt in sorted(ids, key=lambda i: -logprobs[i]):
                data = self._llm.detokenize([int(alt)], special=False)
                best.append((data.decode(errors="replace"), data, float(logprobs[alt])))
        data = self._llm.detokenize([token], special=False)
        return TokenLogprob(data.decode(errors="replace"), data, float(logprobs[token]), best)

    def _run(
        self,
        prompt: list[int],
        budget: int,
        request: GenerateRequest,
        constraints: tuple[LlamaGrammar | None, LogitsProcessorList | None],
        emit: Callable[[str, int, list[TokenLogprob]], bool],
    ) -> str:
        """Generate in this (worker) thread; ``emit(text, tokens, logprobs)`` returns False to
        stop."""
        grammar, bias = constraints
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, pending, produced = "", 0, 0
        logprobs: list[TokenLogprob] = []
        eos = self._llm.token_eos()
        # Without a seed, draw one: the context would otherwise keep the last caller's.
        seed = request.seed
        if seed is None:
            seed = random.randrange(_SEED_RANGE)  # noqa: S311 - sampling, not secrets
        with self._lock:
            self._llm.set_seed(seed % _SEED_RANGE)  # 2**32 - 1 would mean "random" to llama.cpp
            finish = "stop"
            for token in self._llm.generate(
                prompt,
                temp=request.temperature,
                top_p=request.top_p,
                repeat_penalty=self._repeat_penalty,
                presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty,
                logits_processor=bias,
                grammar=grammar,
                reset=True,
            ):
                if token == eos or llama_cpp.llama_token_is_eog(self._llm._model.vocab, token):
                    break
                if request.logprobs:
                    logprobs.append(self._logprob(token, request.top_logprobs))
                produced += 1
                pending += 1
                piece = decoder.decode(self._llm.detokenize([token], special=False))
                if piece:
                    text += piece
                    for stop in request.stop:
                        if stop in text:
                            cut = piece[: len(piece) - (len(text) - text.index(stop))]
                            emit(cut, pending, logprobs)
                            return "stop"
                    if not emit(piece, pending, logprobs):
                        return "stop"
                    pending, logprobs = 0, []
                if produced >= budget:
                    finish = "length"
                    break
        if pending:  # tokens of a character left unfinished still count in usage
            emit(decoder.decode(b"", final=True), pending, logprobs)
        return finish

    def _echo(self, request: GenerateRequest, prompt: list[int]) -> str:
        if request.prompt is not None:
            return request.prompt
        return self._llm.detokenize(prompt, special=False).decode(errors="replace")

    def _shaper(self, request: GenerateRequest) -> ToolCallParser | None:
        return ToolCallParser() if request.tools and request.tool_choice != "none" else None

    # -- the runtime interface ----------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> Generation:
        stream = await self.stream(request)
        text: list[str] = []
        calls: dict[str, ToolCall] = {}
        logprobs: list[TokenLogprob] = []
        try:
            async for delta in stream.tokens:
                text.append(delta.content)
                logprobs.extend(delta.logprobs)
                if delta.call_id is not None:
                    calls[delta.call_id] = ToolCall(delta.call_id, delta.call_name or "", "")
                elif delta.arguments:
                    call = list(calls.values())[-1]
                    call.arguments += delta.arguments
        finally:  # cancelled (the caller left): stop the generating thread now, not at GC
            await stream.tokens.aclose()  # type: ignore[attr-defined]
        return Generation(
            "".join(text),
            stream.finish_reason,
            stream.prompt_tokens,
            stream.completion_tokens,
            list(calls.values()),
            logprobs,
        )

    async def stream(self, request: GenerateRequest) -> GenerationStream:
        prompt, budget = self._prompt_tokens(request)
        # A bad schema or bias is a 400 before the stream starts. Compiling a grammar is
        # native work that grows with the schema: off the event loop, so that the replica
        # keeps answering its health probes meanwhile.
        if request.json_schema is not None or request.tools:
            grammar = await asyncio.to_thread(self._grammar, request)
        else:
            grammar = None
        constraints = (grammar, self._bias(request))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stopped = threading.Event()

        def push(piece: str, tokens: int, logprobs: list[TokenLogprob]) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, (piece, tokens, logprobs))
            return not stopped.is_set()

        def produce() -> None:
            finish: str | Exception
            try:
                finish = self._run(prompt, budget, request, constraints, push)
            except Exception as exc:  # surfaces in the consumer
                finish = exc
            loop.call_soon_threadsafe(queue.put_nowait, (_DONE, finish, []))

        result = GenerationStream(prompt_tokens=len(prompt), tokens=_empty())
        shaper = self._shaper(request)

        async def deltas() -> AsyncIterator[Delta]:
            worker = loop.run_in_executor(None, produce)
            try:
                if request.echo:
                    yield Delta(content=self._echo(request, prompt))
                while True:
                    piece, value, logprobs = await queue.get()
                    if piece is _DONE:
                        if isinstance(value, Exception):
                            raise value
                        result.finish_reason = value
                        if shaper is not None:
                            for delta in shaper.finish():
                                yield delta
                            if shaper.closed:
                                result.finish_reason = "tool_calls"
                        return
                    result.completion_tokens += value
                    if shaper is None:
                        yield Delta(content=piece, logprobs=logprobs)
                    else:
                        for delta in shaper.feed(piece, logprobs):
                            yield delta
            finally:
                stopped.set()  # the consumer left early: the thread stops at its next token
                await asyncio.shield(worker)

        result.tokens = deltas()
        return result


async def _empty() -> AsyncIterator[Delta]:
    return
    yield  # pragma: no cover - makes this an async generator
