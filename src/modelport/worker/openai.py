"""The replica's OpenAI-compatible handler: chat, completions, embeddings, transcriptions.

Requests are validated in OpenAI's terms (``openai_requests``) and translated into the
runtime's typed requests; every error names the offending ``param``. Streams are server-sent
events with one model token per event, each tagged ``id: N``, so the gateway can count exactly
what a client received even if it hangs up; exact totals close the stream as an SSE comment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import time
import uuid
from typing import Any

import numpy as np
import orjson

from modelport.core.asgi import (
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_bytes,
    send_json,
    until_disconnected,
)
from modelport.core.errors import NotFound, PayloadTooLarge, Unavailable
from modelport.core.jsonbody import json_object
from modelport.core.multipart import parse_form
from modelport.core.replica import ReplicaSpec
from modelport.core.usage import UNITS_HEADER, UNITS_SSE_PREFIX, Units
from modelport.runtimes import ModelRuntime
from modelport.runtimes.tasks import Delta, TokenLogprob
from modelport.worker.openai_fields import fail
from modelport.worker.openai_requests import (
    ChatOptions,
    parse_chat,
    parse_completion,
    parse_embedding,
)

__all__ = ["OpenAIHandler"]

_JSON = (b"content-type", b"application/json")


def _chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    def one(token: str, data: bytes, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(data)}

    return {
        "content": [
            {**one(e.token, e.data, e.logprob), "top_logprobs": [one(*t) for t in e.top]}
            for e in entries
        ],
        "refusal": None,
    }


def _completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, _, lp in e.top} for e in entries],
        "text_offset": offsets,
    }


def _delta_json(delta: Delta) -> dict[str, Any]:
    """A chat stream's delta in OpenAI's shape."""
    if delta.call_id is not None:
        call = {
            "index": 0,
            "id": delta.call_id,
            "type": "function",
            "function": {"name": delta.call_name, "arguments": ""},
        }
        return {"tool_calls": [call]}
    if delta.arguments:
        return {"tool_calls": [{"index": 0, "function": {"arguments": delta.arguments}}]}
    return {"content": delta.content}


class OpenAIHandler:
    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, runtime: ModelRuntime | None
    ) -> None:
        path: str = scope["path"]
        if scope["method"] != "POST":
            raise NotFound(f"no route {scope['method']} {path}")
        if runtime is None:
            raise Unavailable("model is still loading")
        body = await read_body(receive, self.spec.max_body_bytes)
        if path == "/v1/audio/transcriptions":
            await self._transcribe(scope, body, send, runtime)
            return
        payload = json_object(body)
        if path == "/v1/chat/completions":
            await self._generate(payload, receive, send, runtime, chat=True)
        elif path == "/v1/completions":
            await self._generate(payload, receive, send, runtime, chat=False)
        elif path == "/v1/embeddings":
            await self._embed(payload, send, runtime)
        else:
            raise NotFound(f"no route POST {path}")

    # -- generation ---------------------------------------------------------------------------

    def _envelope(self, chat: bool, stream: bool) -> dict[str, Any]:
        kind = ("chat.completion" if chat else "text_completion") + (
            ".chunk" if stream and chat else ""
        )
        prefix = "chatcmpl-" if chat else "cmpl-"
        return {
            "id": prefix + uuid.uuid4().hex[:24],
            "object": kind,
            "created": int(time.time()),
            "model": self.spec.endpoint,
        }

    async def _generate(
        self,
        payload: dict[str, Any],
        receive: Receive,
        send: Send,
        runtime: ModelRuntime,
        *,
        chat: bool,
    ) -> None:
        options = parse_chat(payload) if chat else parse_completion(payload)
        options.request.max_prompt_tokens = self.spec.max_prompt_tokens
        if options.stream:
            await self._stream(options, receive, send, runtime, chat)
            return
        # The gateway closes the connection when its client leaves: stop generating then,
        # rather than finish an answer nobody will read while the next caller waits.
        result = await until_disconnected(receive, runtime.generate(options.request))
        if result is None:
            return
        choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason}
        if chat:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": result.text if result.text or not result.tool_calls else None,
                "refusal": None,
            }
            if result.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in result.tool_calls
                ]
            choice["message"] = message
            choice["logprobs"] = _chat_logprobs(result.logprobs) if options.logprobs else None
        else:
            logprobs = None
            if options.completion_logprobs is not None:
                logprobs = _completion_logprobs(result.logprobs, 0)
            choice.update(text=result.text, logprobs=logprobs)
        usage = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        units = Units(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens)
        response = {**self._envelope(chat, False), "choices": [choice], "usage": usage}
        await send_json(send, 200, response, [(UNITS_HEADER, units.encode())])

    def _chunk_choice(
        self, delta: Delta, options: ChatOptions, chat: bool, first: bool, offset: int
    ) -> dict[str, Any]:
        if chat:
            body = _delta_json(delta)
            if first:
                body["role"] = "assistant"
            logprobs = _chat_logprobs(delta.logprobs) if options.logprobs else None
            return {"index": 0, "delta": body, "logprobs": logprobs, "finish_reason": None}
        legacy = None
        if options.completion_logprobs is not None:
            legacy = _completion_logprobs(delta.logprobs, offset)
        return {"index": 0, "text": delta.content, "logprobs": legacy, "finish_reason": None}

    async def _stream(
        self,
        options: ChatOptions,
        receive: Receive,
        send: Send,
        runtime: ModelRuntime,
        chat: bool,
    ) -> None:
        generation = await runtime.stream(options.request)  # raises 4xx before the stream
        envelope = self._envelope(chat, True)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def event(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body = {**envelope, "choices": choices, **extra}
            if options.include_obfuscation:  # pads chunks so their sizes reveal no tokens
                body["obfuscation"] = secrets.token_urlsafe(secrets.randbelow(16) + 1)
            return orjson.dumps(body)

        units = Units(input_tokens=generation.prompt_tokens)
        await event(UNITS_SSE_PREFIX + units.encode() + b"\n\n")
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        first, offset = True, 0
        try:
            async for delta in generation.tokens:
                if gone.is_set():
                    break  # the client left: stop generating (closing the iterator stops it)
                choice = self._chunk_choice(delta, options, chat, first, offset)
                first, offset = False, offset + len(delta.content)
                # The id is the running token count: the gateway's exact tally if the client
                # hangs up before the closing usage comment.
                data = chunk([choice])
                await event(b"id: %d\ndata: %s\n\n" % (generation.completion_tokens, data))
        finally:
            with contextlib.suppress(Exception):
                await generation.tokens.aclose()  # type: ignore[attr-defined]
            watcher.cancel()
        if gone.is_set():
            return
        last: dict[str, Any] = (
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": generation.finish_reason}
            if chat
            else {
                "index": 0,
                "text": "",
                "logprobs": None,
                "finish_reason": generation.finish_reason,
            }
        )
        await event(b"data: " + chunk([last]) + b"\n\n")
        count = generation.completion_tokens
        if options.include_usage:
            usage = {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": count,
                "total_tokens": generation.prompt_tokens + count,
            }
            await event(b"data: " + chunk([], usage=usage) + b"\n\n")
        units.output_tokens = count
        await event(UNITS_SSE_PREFIX + units.encode() + b"\n\n")
        await event(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- embeddings ---------------------------------------------------------------------------

    async def _embed(self, payload: dict[str, Any], send: Send, runtime: ModelRuntime) -> None:
        request = parse_embedding(
            payload,
            max_inputs=self.spec.max_embedding_inputs,
            max_chars=self.spec.max_embedding_chars,
        )
        # Truncating a vector is honest only for models trained for it (Matryoshka), and
        # nothing says which are: a different size is refused rather than faked.
        native = getattr(runtime, "embedding_dimensions", None)
        if request.dimensions is not None and native is not None and request.dimensions != native:
            raise fail(
                f"'dimensions' must be {native}, this model's size (it cannot shorten vectors)",
                "dimensions",
            )
        result = await runtime.embed(request.texts)
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
        if request.dimensions is not None and vectors.shape[1] != request.dimensions:
            raise fail(f"'dimensions' must be {vectors.shape[1]}, this model's size",
                        "dimensions")  # fmt: skip
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(v.tobytes()).decode() if request.encoding == "base64" else v
                ),
            }
            for i, v in enumerate(vectors)
        ]
        response = {
            "object": "list",
            "data": data,
            "model": self.spec.endpoint,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
        body = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        units = Units(input_tokens=result.tokens)
        await send_bytes(send, 200, body, [_JSON, (UNITS_HEADER, units.encode())])

    # -- transcription ------------------------------------------------------------------------

    async def _transcribe(
        self, scope: Scope, body: bytes, send: Send, runtime: ModelRuntime
    ) -> None:
        form = parse_form(body, header(scope, b"content-type") or b"")
        upload = form.get("file")
        if upload is None or not upload.data:
            raise fail("'file' is required: the audio to transcribe (WAV or FLAC)", "file")
        response_format = form["response_format"].text if "response_format" in form else "json"
        if response_format not in ("json", "text", "verbose_json"):
            raise fail("'response_format' must be json, text or verbose_json", "response_format")
        audio, rate = await asyncio.to_thread(
            _decode_audio, upload.data, self.spec.max_audio_seconds
        )
        result = await runtime.transcribe(audio, rate)
        units = Units(audio_seconds=round(result.duration_s, 3))
        extra = [(UNITS_HEADER, units.encode())]
        if response_format == "text":
            await send_bytes(
                send, 200, result.text.encode(), [(b"content-type", b"text/plain"), *extra]
            )
        elif response_format == "verbose_json":
            payload = {
                "task": "transcribe",
                "language": "english",
                "duration": result.duration_s,
                "text": result.text,
                "segments": result.segments,
            }
            await send_json(send, 200, payload, extra)
        else:
            await send_json(send, 200, {"text": result.text}, extra)


def _decode_audio(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate from WAV or FLAC bytes; a recording longer than
    ``max_seconds`` is refused from its header, before it is decoded."""
    import soundfile

    try:
        duration = soundfile.info(io.BytesIO(data)).duration
        if duration > max_seconds:
            raise PayloadTooLarge(
                f"'file' holds {duration:.1f} s of audio; this server transcribes at most "
                f"{max_seconds:g} s per request (MODELPORT_MAX_AUDIO_SECONDS): split the "
                "recording",
                param="file",
                limit_seconds=max_seconds,
            )
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise fail(f"'file' is not a WAV or FLAC audio file: {exc}", "file") from exc
    if samples.shape[0] == 0:
        raise fail("'file' holds no audio samples", "file")
    return samples.mean(axis=1), int(rate)
