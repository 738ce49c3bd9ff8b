"""Small raw-ASGI helpers for the hot paths (gateway and worker), where a framework's
per-request cost would dominate the microseconds a proxy is allowed to add.

Request bodies are bounded twice as they arrive: in size (``PayloadTooLarge`` at the byte
that passes the limit, whether or not the client declared a length) and in time
(``RequestTimeout`` once the body is not complete within its budget), so a client can hold
neither memory nor a connection for longer than the server allows.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import orjson

from modelport.core.errors import ModelportError, PayloadTooLarge, RequestTimeout

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "BoundedReceive",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "bearer_credential",
    "bearer_token",
    "header",
    "read_body",
    "send_bytes",
    "send_json",
    "until_disconnected",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_T = TypeVar("_T")

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
    return bearer_credential(header(scope, b"authorization"))


def bearer_credential(authorization: bytes | None) -> bytes | None:
    """``bearer_token`` for an ``Authorization`` value already in hand."""
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

    The deadline is one timer per body, armed here and cancelled once the body is complete:
    ``asyncio.timeout`` around every receive would cost the gateway ~10 us a request.
    """

    __slots__ = (
        "_advice",
        "_expired",
        "_idle_s",
        "_limit",
        "_receive",
        "_task",
        "_timeout_s",
        "_timer",
        "_waiting",
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
        self._idle_s = idle_s
        self._advice = advice
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            timeout_s, self._expire
        )
        self._expired = False
        self._waiting = False
        self.size = 0
        self.done = False
        self.error: ModelportError | None = None

    async def __call__(self) -> Message:
        if self.done:
            return await self._receive()
        if self.error is not None:  # a caller that swallowed the error asks again
            raise self.error
        if self._expired:
            raise self._fail(self._timed_out())
        self._waiting = True
        try:
            if self._idle_s is None:
                message = await self._receive()
            else:
                async with asyncio.timeout(self._idle_s):
                    message = await self._receive()
        except TimeoutError:  # only the idle timeout raises it
            raise self._fail(
                RequestTimeout(
                    f"no part of the request body arrived for {self._idle_s:g} s: send it "
                    "without pauses"
                )
            ) from None
        except asyncio.CancelledError:
            # Our deadline cancelled the wait; any other cancellation is passed on.
            if self._expired and self._task is not None and self._task.uncancel() == 0:
                raise self._fail(self._timed_out()) from None
            raise
        finally:
            self._waiting = False
        if message["type"] != "http.request":  # http.disconnect: nothing more will come
            self._finish()
            return message
        self.size += len(message.get("body", b""))
        if self.size > self._limit:
            raise self._fail(
                PayloadTooLarge(
                    f"request body exceeds the limit of {self._limit} bytes: {self._advice}"
                )
            )
        if not message.get("more_body"):
            self._finish()
        return message

    def close(self) -> None:
        """Stop the deadline's timer; for a caller done with the request before its body."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._expired = True
        if self._waiting and self._task is not None:
            self._task.cancel()

    def _timed_out(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request body was not complete within {self._timeout_s:g} s: send it without "
            "pauses"
        )

    def _finish(self) -> None:
        self.done = True
        self.close()

    def _fail(self, error: ModelportError) -> ModelportError:
        self.error = error
        self.close()
        return error


class _BodyDeadlines:
    """The deadlines of the bodies being read on one event loop, enforced by one ticker.

    Arming and cancelling a loop timer for every body costs ~6 µs a request on the hot path
    (measured in the worker's V2 handler); entering a dict costs well under one. The ticker
    runs only while some body is being read, every ``_TICK_S``: a 408 comes at most that much
    after its deadline."""

    __slots__ = ("_expired", "_loop", "_reading", "_ticking")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._ticking = False

    def start(self, task: asyncio.Task[Any], timeout_s: float) -> None:
        self._reading[task] = self._loop.time() + timeout_s
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(_TICK_S, self._tick)

    def stop(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``'s body; whether its deadline cancelled it."""
        self._reading.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _tick(self) -> None:
        now = self._loop.time()
        late = [task for task, deadline in self._reading.items() if deadline <= now]
        for task in late:
            del self._reading[task]
            self._expired.add(task)
            task.cancel()
        if self._reading:
            self._loop.call_later(_TICK_S, self._tick)
        else:
            self._ticking = False


_TICK_S = 0.25
_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _BodyDeadlines] = (
    weakref.WeakKeyDictionary()
)


def _deadlines(loop: asyncio.AbstractEventLoop) -> _BodyDeadlines:
    deadlines = _DEADLINES.get(loop)
    if deadlines is None:
        deadlines = _DEADLINES[loop] = _BodyDeadlines(loop)
    return deadlines


async def read_body(
    receive: Receive,
    limit: int,
    declared: int | None = None,
    *,
    timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> bytes:
    """The whole request body: ``PayloadTooLarge`` once it passes ``limit`` bytes (checked
    against ``declared``, the Content-Length, first), ``RequestTimeout`` if it is not all
    there within ``timeout_s`` (give or take a quarter second).

    ``BoundedReceive`` inlined for the hot path: here the task waits in nothing but
    ``receive`` until the body is read, so its deadline may cancel it outright.
    """
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes: {_ROWS_ADVICE}"
        )
    task = asyncio.current_task()
    assert task is not None
    deadlines = _deadlines(asyncio.get_running_loop())
    deadlines.start(task, timeout_s)
    try:
        message = await receive()
        body = message.get("body", b"")
        size = len(body)
        chunks = [body]
        while True:
            if size > limit:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {limit} bytes: {_ROWS_ADVICE}"
                )
            if not message.get("more_body"):  # also a disconnect: nothing more will come
                break
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
    except asyncio.CancelledError:
        if deadlines.stop(task) and task.uncancel() == 0:
            raise RequestTimeout(
                f"the request body was not complete within {timeout_s:g} s: send it without pauses"
            ) from None
        raise
    finally:
        deadlines.stop(task)
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


async def until_disconnected(receive: Receive, work: Awaitable[_T]) -> _T | None:
    """``await work``, unless the client disconnects first: then cancel it and return
    ``None``. Call it once the request body has been read; from then on ``receive`` only
    says that the client left. Cancelling the work is how long work learns nobody waits for
    its answer: the gateway closes the replica's connection, a replica stops generating."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watcher.exception() is not None:
            await asyncio.wait((task,))  # no way to watch the client: just wait for the work
    except BaseException:
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        # Finished just as the client left: hand the result on, so the caller releases what
        # it holds (a stream's connection) on its usual path.
        return await task
    except (Exception, asyncio.CancelledError):
        return None  # the client is gone; nobody is left to tell how the work ended


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
