"""Units from servers that are not Modelport workers: vLLM replicas and external
OpenAI-compatible servers report what a call consumed as OpenAI's ``usage``, not in the
``x-modelport-units`` header.

- A whole answer carries ``usage`` in its JSON body (``prompt_tokens``, ``completion_tokens``;
  ``input_tokens``/``output_tokens`` in newer APIs; ``seconds`` for a transcription).
- A stream carries it only when asked: the gateway adds ``stream_options.include_usage`` to
  the request, reads the final usage event (``choices: []``) and passes it on only to a client
  that asked for it itself. A server that ignores the option (llama-cpp-python's server does)
  is metered by its content events, one per token as such servers send them: an estimate of
  the output tokens, with no input tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelport.core.usage import UNITS_SSE_PREFIX, Units

__all__ = ["OpenAIStreamUsage", "asked_for_usage", "asking_for_usage", "units_from_body"]

_USAGE_KEY = b'"usage"'
_MAX_USAGE_BYTES = 4096  # a usage object is ~100 bytes; past this it is not one
_DONE = b"[DONE]"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _units(usage: Any) -> Units | None:
    """Units from an OpenAI ``usage`` object; None when it is not one."""
    if not isinstance(usage, dict):
        return None
    units = Units(
        input_tokens=_count(usage.get("prompt_tokens")) or _count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("completion_tokens")) or _count(usage.get("output_tokens")),
    )
    seconds = usage.get("seconds")  # a transcription billed by duration
    if usage.get("type") == "duration" and isinstance(seconds, int | float) and seconds > 0:
        units.audio_seconds = float(seconds)
    return units


def _tail_usage(body: bytes) -> Any:
    """The last ``"usage": {...}`` object of a JSON body, read without parsing the rest
    (an embeddings answer can be megabytes of floats; its usage comes last). ``...`` when
    the tail does not hold one plainly, so that the caller parses the whole body."""
    at = body.rfind(_USAGE_KEY)
    if at <= 0 or body[at - 1] == 0x5C:  # a backslash: the word inside a string
        return ...
    start = body.find(b"{", at + len(_USAGE_KEY), at + len(_USAGE_KEY) + 16)
    if start < 0 or body[at + len(_USAGE_KEY) : start].strip() != b":":
        return ...
    depth = 0
    for end in range(start, min(len(body), start + _MAX_USAGE_BYTES)):
        byte = body[end]
        if byte == 0x7B:  # {
            depth += 1
        elif byte == 0x7D:  # }
            depth -= 1
            if depth == 0:
                try:
                    return orjson.loads(body[start : end + 1])
                except orjson.JSONDecodeError:
                    return ...
    return ...


def units_from_body(body: bytes) -> Units:
    """The units an OpenAI-compatible JSON answer reports in its ``usage`` (one request and
    nothing else when it reports none)."""
    usage = _tail_usage(body)
    if usage is ...:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Units()
        usage = answer.get("usage") if isinstance(answer, dict) else None
    return _units(usage) or Units()


def asked_for_usage(payload: dict[str, Any]) -> bool:
    """Did the client ask for the stream's usage event itself?"""
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def asking_for_usage(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with ``stream_options.include_usage`` set, keeping the client's other
    stream options; unchanged when its ``stream_options`` is not an object (the upstream
    answers that mistake in its own words)."""
    options = payload.get("stream_options")
    if options is None:
        return {**payload, "stream_options": {"include_usage": True}}
    if isinstance(options, dict):
        return {**payload, "stream_options": {**options, "include_usage": True}}
    return payload


def _next_boundary(buffer: bytes, start: int) -> tuple[int, int]:
    """Where the next blank line that ends an SSE event is, and its length; (-1, 0) if none."""
    lf = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\r\n\r\n", start)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return (lf, 2) if lf >= 0 else (-1, 0)


def _data(event: bytes) -> bytes | None:
    """The data of an SSE event (its ``data:`` lines joined); None for a comment or ping."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


def _has_content(choices: list[Any]) -> bool:
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content")
        ):
            return True
        if choice.get("text"):
            return True
    return False


class OpenAIStreamUsage:
    """Reads an OpenAI-format event stream on its way to the client.

    It keeps the events' bytes as the upstream sent them, drops the usage event when
    ``hide_usage`` (the client did not ask for it), and ends the stream it relays with a
    Modelport units comment (which the relay meters and never forwards). ``content_events``
    counts the events that carried content: the output tokens of a stream cut short.
    """

    def __init__(self, *, hide_usage: bool) -> None:
        self.hide_usage = hide_usage
        self.usage: Units | None = None
        self.content_events = 0
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events of ``chunk`` (with what earlier chunks left) to pass on."""
        buffer = self._buffer + chunk if self._buffer else chunk
        kept: list[bytes] = []
        start = 0
        while True:
            end, size = _next_boundary(buffer, start)
            if end < 0:
                break
            event = buffer[start : end + size]
            start = end + size
            if self._keep(event):
                kept.append(event)
        self._buffer = buffer[start:]
        return b"".join(kept)

    def _keep(self, event: bytes) -> bool:
        data = _data(event)
        if data is None or data == _DONE:
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True  # not ours to judge: the client gets it as the upstream sent it
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        choices = choices if isinstance(choices, list) else []
        usage = _units(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        if _has_content(choices):
            self.content_events += 1
        # Only the dedicated usage event is dropped: one that also carries choices is content.
        return not (usage is not None and not choices and self.hide_usage)

    def units(self) -> Units:
        """What the stream consumed: the upstream's usage, else its content events."""
        if self.usage is not None:
            return self.usage
        return Units(output_tokens=self.content_events)

    async def relay(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` as whole events, then the units comment once the upstream finished."""
        async for chunk in chunks:
            events = self.feed(chunk)
            if events:
                yield events
        if self._buffer:  # an unterminated last event: pass it on as it is
            yield self._buffer
            self._buffer = b""
        yield UNITS_SSE_PREFIX + self.units().encode() + b"\n\n"
