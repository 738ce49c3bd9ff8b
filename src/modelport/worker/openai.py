"""The replica's OpenAI-compatible handler: chat, completions, embeddings, transcriptions.

Requests are validated here, in OpenAI's terms, and translated into the runtime's typed
requests; every error names the offending ``param``. Streams are server-sent events with one
model token per event, each tagged ``id: N``, so the gateway can count exactly what a client
received even if it hangs up; exact totals close the stream as an SSE comment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
import uuid
from typing import Any

import numpy as np
import orjson

from modelport.core.asgi import Receive, Scope, Send, header, read_body, send_bytes, send_json
from modelport.core.errors import InvalidRequest, NotFound, Unavailable
from modelport.core.jsonbody import json_object
from modelport.core.multipart import parse_form
from modelport.core.replica import ReplicaSpec
from modelport.core.usage import UNITS_HEADER, UNITS_SSE_PREFIX, Units
from modelport.runtimes import ModelRuntime
from modelport.runtimes.tasks import GenerateRequest

__all__ = ["OpenAIHandler"]

_JSON = (b"content-type", b"application/json")
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _number(payload: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = payload.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"'{name}' must be a number from {low} to {high}", name)
    return float(value)


def _generate_request(payload: dict[str, Any], *, chat: bool) -> GenerateRequest:
    request = GenerateRequest(
        temperature=_number(payload, "temperature", 0.7, 0.0, 2.0),
        top_p=_number(payload, "top_p", 1.0, 0.0, 1.0),
    )
    if chat:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _fail("'messages' must be a non-empty list of {role, content}", "messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise _fail(f"messages[{index}] needs a role out of {sorted(_ROLES)}", "messages")
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                parts = [p.get("text", "") for p in content if isinstance(p, dict)]
                message = {**message, "content": "".join(parts)}
            elif not isinstance(content, str):
                raise _fail(f"messages[{index}].content must be a string", "messages")
            messages[index] = message
        request.messages = messages
    else:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _fail("'prompt' must be a string", "prompt")
        request.prompt = prompt
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(f"'{name}' must be a positive integer", name)
            request.max_tokens = value
    stop = payload.get("stop")
    if isinstance(stop, str):
        request.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        request.stop = stop
    elif stop is not None:
        raise _fail("'stop' must be a string or a list of strings", "stop")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _fail("'seed' must be an integer", "seed")
    request.seed = seed
    if payload.get("n", 1) != 1:
        raise _fail("only n=1 is supported", "n")
    return request


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
        request = _generate_request(payload, chat=chat)
        stream = payload.get("stream", False)
        if not isinstance(stream, bool):
            raise _fail("'stream' must be true or false", "stream")
        if stream:
            options = payload.get("stream_options") or {}
            if not isinstance(options, dict):
                raise _fail("'stream_options' must be an object", "stream_options")
            await self._stream(
                request, receive, send, runtime, chat, bool(options.get("include_usage"))
            )
            return
        result = await runtime.generate(request)
        choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": result.text}
        else:
            choice.update(text=result.text, logprobs=None)
        usage = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        units = Units(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens)
        response = {**self._envelope(chat, False), "choices": [choice], "usage": usage}
        await send_json(send, 200, response, [(UNITS_HEADER, units.encode())])

    async def _stream(
        self,
        request: GenerateRequest,
        receive: Receive,
        send: Send,
        runtime: ModelRuntime,
        chat: bool,
        include_usage: bool,
    ) -> None:
        generation = await runtime.stream(request)  # raises 4xx before the stream starts
        envelope = self._envelope(chat, True)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def event(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        units = Units(input_tokens=generation.prompt_tokens)
        await event(UNITS_SSE_PREFIX + units.encode() + b"\n\n")
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        first = True
        try:
            async for token in generation.tokens:
                if gone.is_set():
                    break  # the client left: stop generating (closing the iterator stops it)
                delta: dict[str, Any] = {"content": token}
                if chat and first:
                    delta["role"] = "assistant"
                    first = False
                choice = (
                    {"index": 0, "delta": delta, "finish_reason": None}
                    if chat
                    else {"index": 0, "text": token, "finish_reason": None, "logprobs": None}
                )
                data = orjson.dumps({**envelope, "choices": [choice]})
                # The id is the running token count: the gateway's exact tally if the client
                # hangs up before the closing usage comment.
                await event(b"id: %d\ndata: %s\n\n" % (generation.completion_tokens, data))
        finally:
            with contextlib.suppress(Exception):
                await generation.tokens.aclose()  # type: ignore[attr-defined]
            watcher.cancel()
        if gone.is_set():
            return
        last = (
            {"index": 0, "delta": {}, "finish_reason": generation.finish_reason}
            if chat
            else {"index": 0, "text": "", "finish_reason": generation.finish_reason}
        )
        await event(b"data: " + orjson.dumps({**envelope, "choices": [last]}) + b"\n\n")
        count = generation.completion_tokens
        if include_usage:
            usage = {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": count,
                "total_tokens": generation.prompt_tokens + count,
            }
            await event(
                b"data: " + orjson.dumps({**envelope, "choices": [], "usage": usage}) + b"\n\n"
            )
        units.output_tokens = count
        await event(UNITS_SSE_PREFIX + units.encode() + b"\n\n")
        await event(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- embeddings ---------------------------------------------------------------------------

    async def _embed(self, payload: dict[str, Any], send: Send, runtime: ModelRuntime) -> None:
        texts = payload.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _fail("'input' must be a string or a non-empty list of strings", "input")
        if any(not t for t in texts):
            raise _fail("'input' must not contain empty strings", "input")
        encoding = payload.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _fail("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        if payload.get("dimensions") is not None:
            raise _fail("'dimensions' is not supported by this model", "dimensions")
        result = await runtime.embed(texts)
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.tobytes()).decode() if encoding == "base64" else v,
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
            raise _fail("'file' is required: the audio to transcribe (WAV or FLAC)", "file")
        response_format = form["response_format"].text if "response_format" in form else "json"
        if response_format not in ("json", "text", "verbose_json"):
            raise _fail("'response_format' must be json, text or verbose_json", "response_format")
        audio, rate = await asyncio.to_thread(_decode_audio, upload.data)
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


def _decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate from WAV or FLAC bytes."""
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise _fail(f"'file' is not a WAV or FLAC audio file: {exc}", "file") from exc
    if samples.shape[0] == 0:
        raise _fail("'file' holds no audio samples", "file")
    return samples.mean(axis=1), int(rate)
