"""Small raw-ASGI helpers for the hot paths (gateway and worker), where a framework's
per-request cost would dominate the microseconds a proxy is allowed to add.

Request bodies are bounded twice as they arrive: in size (``PayloadTooLarge`` at the byte
that passes the limit, whether or not the client declared a length) and in time
(``RequestTimeout`` once the body is not complete within its budget), so a client can hold
neither memory nor a connection for longer than the server allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from modelport.core.errors import ModelportError, PayloadTooLarge, RequestTimeout

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "BoundedReceive",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "bearer_token",
    "header",
    "read_body",
    "send_bytes",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_BODY_TIMEOUT_S = 30.0  # MODELPORT_BODY_TIMEOUT_S's default
_JSON = (b"content-type", b"application/json")
_ROWS_ADVICE = "send fewer rows per request or raise MODELPORT_MAX_BODY_BYTES"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lowercase), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def bearer_token(scope: Scope) -> bytes | None:
    """The credential of ``Authorization: Bearer <token>``, or ``None`` if there is none.

    The scheme is matched case-insensitively (RFC 9110 section 11.1), so ``bearer`` and
    ``BEARER`` work as ``Bearer`` does; an empty token or another scheme gives ``None``.
    """
    authorization = header(scope, b"authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip() or None


class BoundedReceive:
    """A ``receive`` that bounds the request body in size and in time.

    It raises ``PayloadTooLarge`` when the bytes received pass ``limit`` and
    ``RequestTimeout`` when the body is not complete ``timeout_s`` after this object was
    made, or (with ``idle_s``) when no part of it arrives for ``idle_s``. Once the body is
    complete it passes ``receive`` through unbounded: waiting for ``http.disconnect`` is
    how servers learn that a client went away, not a slow body. ``error`` holds what it
    raised, so a caller can close the connection instead of keeping it alive.
    """

    __slots__ = (
        "_advice",
        "_deadline",
        "_idle_s",
        "_limit",
        "_receive",
        "_timeout_s",
        "done",
        "error",
        "size",
    )

    def __init__(
        self,
        receive: Receive,
        *,
        limit: int,
        timeout_s: float,
        idle_s: float | None = None,
        advice: str = "raise MODELPORT_MAX_BODY_BYTES",
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout_s = timeout_s
        self._deadline = asyncio.get_running_loop().time() + timeout_s
        self._idle_s = idle_s
        self._advice = advice
        self.size = 0
        self.done = False
        self.error: ModelportError | None = None

    async def __call__(self) -> Message:
        if self.done:
            return await self._receive()
        if self.error is not None:  # a caller that swallowed the error asks again
            raise self.error
        wait = self._deadline - asyncio.get_running_loop().time()
        idle = self._idle_s is not None and self._idle_s < wait
        if self._idle_s is not None and idle:
            wait = self._idle_s
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                message = await self._receive()
        except TimeoutError:
            waited = (
                f"no part of the request body arrived for {self._idle_s:g} s"
                if idle
                else f"the request body was not complete within {self._timeout_s:g} s"
            )
            raise self._fail(RequestTimeout(f"{waited}: send it without pauses")) from None
        if message["type"] != "http.request":  # http.disconnect: nothing more will come
            self.done = True
            return message
        self.size += len(message.get("body", b""))
        if self.size > self._limit:
            raise self._fail(
                PayloadTooLarge(
                    f"request body exceeds the limit of {self._limit} bytes: {self._advice}"
                )
            )
        if not message.get("more_body"):
            self.done = True
        return message

    def _fail(self, error: ModelportError) -> ModelportError:
        self.error = error
        return error


async def read_body(
    receive: Receive,
    limit: int,
    declared: int | None = None,
    *,
    timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> bytes:
    """The whole request body: ``PayloadTooLarge`` once it passes ``limit`` bytes (checked
    against ``declared``, the Content-Length, first), ``RequestTimeout`` if it is not all
    there within ``timeout_s``."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes: {_ROWS_ADVICE}"
        )
    bounded = BoundedReceive(receive, limit=limit, timeout_s=timeout_s, advice=_ROWS_ADVICE)
    message = await bounded()
    body = message.get("body", b"")
    if bounded.done:  # the common case: one message holds it all
        return bytes(body)
    chunks = [body]
    while not bounded.done:
        chunks.append((await bounded()).get("body", b""))
    return b"".join(chunks)


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
