"""Small raw-ASGI helpers for the hot paths (gateway and worker), where a framework's
per-request cost would dominate the microseconds a proxy is allowed to add."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from modelport.core.errors import PayloadTooLarge

__all__ = ["Receive", "Scope", "Send", "header", "read_body", "send_bytes", "send_json"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lowercase), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(receive: Receive, limit: int, declared: int | None = None) -> bytes:
    """The whole request body; ``PayloadTooLarge`` once it passes ``limit`` bytes."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes: send fewer "
            "rows per request or raise MODELPORT_MAX_BODY_BYTES"
        )
    message = await receive()
    body = message.get("body", b"")
    size = len(body)
    chunks = [body]
    while True:
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes: send fewer rows per request "
                "or raise MODELPORT_MAX_BODY_BYTES"
            )
        if not message.get("more_body"):
            break
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
    return bytes(body) if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    extra = headers or []
    await send_bytes(send, status, orjson.dumps(payload), [_JSON, *extra])
