"""Relaying a server-sent event stream from a replica to the client.

Every way out is metered and closes (or pools) the upstream connection: the end of the
stream, the client hanging up (closing the upstream stops the generation), the upstream
breaking off or stalling longer than the chunk timeout (the client gets an error event, and
the revision's SLO window a server fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import orjson

from modelport.core.asgi import Receive, Send, send_bytes
from modelport.core.routing import Route
from modelport.core.usage import UNITS_SSE_PREFIX, Units
from modelport.gateway.openai_usage import OpenAIStreamUsage
from modelport.gateway.upstream import UpstreamError, UpstreamStream
from modelport.observability import tracing

__all__ = ["StreamMeter", "relay_stream"]

#: ``meter(status, units, first_token_at)``: records a stream's usage before its end is sent.
StreamMeter = Callable[[int, Units, float | None], None]

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_FORWARDED_RESPONSE = frozenset({b"content-type", b"inference-header-content-length"})
_CLIENT_GONE = 499


def _error_event(message: str) -> bytes:
    error = {"error": {"message": message, "type": "server_error", "code": "upstream_failed"}}
    return b"data: " + orjson.dumps(error) + b"\n\n"


async def _answer_whole(
    upstream: UpstreamStream,
    send: Send,
    route: Route,
    reply: list[tuple[bytes, bytes]],
    meter: StreamMeter | None,
) -> int:
    """An error before the stream started: read it (bounded) and answer it as it is."""
    try:
        chunks = [chunk async for chunk in upstream.body()]
    except (UpstreamError, OSError, asyncio.IncompleteReadError, ValueError):
        chunks = [orjson.dumps({"error": {"message": "upstream broke off its error answer"}})]
        upstream.status = 502
        upstream.headers = [(b"content-type", b"application/json")]
    finally:
        upstream.close()
    headers = [h for h in upstream.headers if h[0] in _FORWARDED_RESPONSE]
    headers += [*reply, (b"x-modelport-revision", route.revision)]
    if meter is not None:
        meter(upstream.status, Units(), None)
    await send_bytes(send, upstream.status, b"".join(chunks), headers)
    return upstream.status


async def relay_stream(
    upstream: UpstreamStream,
    receive: Receive,
    send: Send,
    route: Route,
    reply: list[tuple[bytes, bytes]],
    chunk_timeout_s: float,
    meter: StreamMeter | None = None,
    delivered: Callable[[int], None] | None = None,
) -> tuple[int, Units]:
    """Relay ``upstream`` to the client; the status to meter and the units delivered.

    ``meter(status, units, first_token_at)`` is called once, BEFORE the stream's last chunk
    (or error event) is sent: the usage is in the journal before the client has its answer.
    ``first_token_at`` is the ``perf_counter`` time the first event was sent (None if none).
    ``delivered(tokens)`` is told the output tokens sent so far after each chunk that
    carried some (admission's tokens-per-minute limits count them as they go).
    """
    if upstream.status != 200:
        return await _answer_whole(upstream, send, route, reply, meter), Units()
    headers = [*_SSE_HEADERS, *reply, (b"x-modelport-revision", route.revision)]
    units = Units()
    sent = 0  # token events the client received, counted by their SSE ids
    told = 0  # what ``delivered`` was last told
    status = 200
    gone = False
    first_at: float | None = None
    metered = False

    def done() -> None:
        nonlocal metered
        if meter is not None and not metered:
            metered = True
            meter(status, units, first_at)
        if tracing.ENABLED:
            tracing.record_units(route, units)

    async def watch_disconnect() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        upstream.close()  # ends the read below; the replica stops generating

    body = upstream.body(chunk_timeout_s)
    foreign: OpenAIStreamUsage | None = None
    if upstream.openai_usage:  # it reports OpenAI usage: read it into a units comment
        foreign = OpenAIStreamUsage(hide_usage=upstream.hide_usage)
        body = foreign.relay(body)
    watcher = asyncio.create_task(watch_disconnect())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for chunk in body:
            if chunk.startswith(UNITS_SSE_PREFIX):
                units = Units.decode(chunk[len(UNITS_SSE_PREFIX) :].strip())
                continue
            if foreign is None and chunk.startswith(b"id: "):
                sent = int(chunk[4 : chunk.index(b"\n")])
            if first_at is None and not chunk.startswith(b":"):
                first_at = time.perf_counter()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if delivered is not None:
                tokens = sent if foreign is None else foreign.content_events
                if tokens != told:
                    told = tokens
                    delivered(tokens)
        done()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (TimeoutError, UpstreamError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        if metered:
            # Only the last, empty chunk failed: the answer was complete, and is metered so.
            return status, units
        units.output_tokens = sent if foreign is None else foreign.content_events
        if gone:
            status = _CLIENT_GONE
            done()
        else:
            # The upstream stalled or broke off: a server fault. Tell the client in the stream
            # (its status line is long gone) rather than end it as if it were complete.
            status = 504 if isinstance(exc, TimeoutError) else 502
            why = "stalled" if status == 504 else "broke off"
            done()
            with contextlib.suppress(OSError):
                await send(
                    {
                        "type": "http.response.body",
                        "body": _error_event(f"the model server {why} mid-stream"),
                        "more_body": False,
                    }
                )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        upstream.close()
    return status, units
