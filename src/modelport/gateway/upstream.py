"""A minimal HTTP/1.1 client with pooled keep-alive connections, for gateway -> replica.

General-purpose clients spend more time per request than the whole budget the gateway has
(under 0.3 ms); replicas are our own, so the protocol subset they speak is small and known:
``content-length`` bodies, and ``chunked`` ones for streams.

Every failure says whether the upstream may have done the work (``maybe_processed``): only a
request that provably never reached it (no connection, or a pooled connection found closed
before anything was written) is safe to send again when the work is not idempotent. Deadlines
are the caller's: wrap calls in ``asyncio.timeout``; a cancelled call closes its connection,
which is how a replica learns that nobody waits for its answer any more.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from modelport.core.routing import Upstream

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse", "UpstreamStream"]

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_MAX_HEAD = 64 * 1024  # a response head larger than this is not one our upstreams send


class UpstreamError(Exception):
    """The upstream could not be reached, broke the connection or answered beyond a limit.

    ``maybe_processed`` is False only when the request provably never reached it."""

    def __init__(self, message: str, *, maybe_processed: bool) -> None:
        super().__init__(message)
        self.maybe_processed = maybe_processed


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class _Head:
    status: int
    headers: list[tuple[bytes, bytes]]
    length: int  # -1: until the connection closes
    chunked: bool
    keep: bool


async def _read_head(reader: asyncio.StreamReader) -> _Head:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    parsed = _Head(int(lines[0][9:12]), [], -1, False, True)
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            parsed.length = int(value)
        elif name == b"transfer-encoding":
            parsed.chunked = b"chunked" in value.lower()
        elif name == b"connection":
            parsed.keep = value.lower() != b"close"
        else:
            parsed.headers.append((name, value))
    if parsed.length < 0 and not parsed.chunked:
        parsed.keep = False
    return parsed


async def _chunks(reader: asyncio.StreamReader) -> AsyncGenerator[bytes, None]:
    """The data of a chunked body, one HTTP chunk at a time (one SSE event, for a stream)."""
    while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
        yield await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")


def _too_large(limit: int) -> UpstreamError:
    return UpstreamError(
        f"upstream answer exceeds {limit} bytes (MODELPORT_MAX_RESPONSE_BYTES)",
        maybe_processed=True,
    )


class UpstreamStream:
    """A response whose body is read as it arrives; ``close`` pools the connection if it can."""

    def __init__(self, pool: UpstreamPool, upstream: Upstream, conn: _Connection, head: _Head):
        self._pool = pool
        self._upstream = upstream
        self._conn = conn
        self._head = head
        self._done = False
        self._closed = False
        self._on_close: Callable[[], None] | None = None
        self.status = head.status
        self.headers = head.headers
        # How to read its units: Modelport's SSE comments, or OpenAI's usage event (an
        # external server, vLLM), kept from a client that did not ask for it when hide_usage.
        self.openai_usage = False
        self.hide_usage = False

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the stream is closed (say, to count it out)."""
        self._on_close = callback

    async def body(self, chunk_timeout_s: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives; ``TimeoutError`` when a chunk takes longer than
        ``chunk_timeout_s`` (a stalled upstream), ``UpstreamError`` past the size limit of a
        body that is not a stream."""
        reader = self._conn[0]
        if self._head.chunked:
            chunks = _chunks(reader)
            try:
                while True:
                    async with asyncio.timeout(chunk_timeout_s):
                        chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    yield chunk
            finally:
                await chunks.aclose()
        elif self._head.length >= 0:
            if self._head.length > self._pool.max_response_bytes:
                raise _too_large(self._pool.max_response_bytes)
            async with asyncio.timeout(chunk_timeout_s):
                yield await reader.readexactly(self._head.length)
        else:
            async with asyncio.timeout(chunk_timeout_s):
                yield await _read_to_close(reader, self._pool.max_response_bytes)
        self._done = True

    def close(self) -> None:
        """Return the connection to the pool if the body was read to its end, else drop it.

        Idempotent: the gateway closes a stream both when it ends and when the client goes
        away, and both happen when a stream completes; pooling one connection twice would hand
        it to two requests."""
        if self._closed:
            return
        self._closed = True
        if self._done and self._head.keep:
            self._pool._release(self._upstream, self._conn)
        else:
            self._conn[1].close()  # the replica sees the disconnect and stops generating
        self._pool._slot(self._upstream).release()
        if self._on_close is not None:
            self._on_close()


async def _read_to_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    content = await reader.read(limit + 1)
    parts = [content]
    size = len(content)
    while content and size <= limit:
        content = await reader.read(limit + 1 - size)
        parts.append(content)
        size += len(content)
    if size > limit:
        raise _too_large(limit)
    return b"".join(parts)


class UpstreamPool:
    """Keeps idle connections per upstream and reuses them.

    At most ``max_connections`` requests are in flight to one upstream at once (more wait for
    a slot, within their deadline), so a loop or a stalled server cannot exhaust the gateway's
    file descriptors. Idle connections expire after ``idle_timeout_s``, kept below the
    replicas' keep-alive timeout (uvicorn: 5 s) so the gateway is the side that closes them,
    and a reused connection is never one the server was closing while we wrote.
    """

    def __init__(
        self,
        *,
        max_idle: int = 64,
        max_connections: int = 256,
        idle_timeout_s: float = 4.0,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self._max_idle = max_idle
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout_s
        self._idle: defaultdict[Upstream, list[tuple[_Connection, float]]] = defaultdict(list)
        self._slots: dict[Upstream, asyncio.Semaphore] = {}
        self._tls: ssl.SSLContext | None = None

    def use_tls_context(self, context: ssl.SSLContext) -> None:
        """Verify TLS upstreams against ``context`` (say, a private CA) instead of the system's."""
        self._tls = context

    def _ssl(self, upstream: Upstream) -> ssl.SSLContext | None:
        if not upstream.tls:
            return None
        if self._tls is None:
            self._tls = ssl.create_default_context()  # verifies the server's certificate
        return self._tls

    def queued(self, upstream: Upstream) -> int:
        """Requests waiting for a free connection to ``upstream`` now (metrics read it at
        scrape time, so the request path counts nothing extra)."""
        slot = self._slots.get(upstream)
        # asyncio keeps no public count of a semaphore's waiters; its queue of them is it.
        waiters = slot._waiters if slot is not None else None
        return len(waiters) if waiters else 0

    def _slot(self, upstream: Upstream) -> asyncio.Semaphore:
        slot = self._slots.get(upstream)
        if slot is None:
            slot = self._slots[upstream] = asyncio.Semaphore(self._max_connections)
        return slot

    @staticmethod
    def _encode(
        upstream: Upstream, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        head = [f"{method} {path} HTTP/1.1\r\nhost: {upstream.host}\r\n".encode()]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        return b"".join(head) + body

    async def request(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        idempotent: bool = False,
    ) -> UpstreamResponse:
        """Send a request and read the whole response."""
        request = self._encode(upstream, method, path, headers, body)
        slot = self._slot(upstream)
        async with slot:
            conn, head = await self._exchange(upstream, request, idempotent)
            reader, writer = conn
            try:
                if head.chunked:
                    parts, size = [], 0
                    async for chunk in _chunks(reader):
                        size += len(chunk)
                        if size > self.max_response_bytes:
                            raise _too_large(self.max_response_bytes)
                        parts.append(chunk)
                    content = b"".join(parts)
                elif head.length >= 0:
                    if head.length > self.max_response_bytes:
                        raise _too_large(self.max_response_bytes)
                    content = await reader.readexactly(head.length)
                else:
                    content = await _read_to_close(reader, self.max_response_bytes)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                raise UpstreamError(
                    f"upstream broke the connection mid-answer: {exc!r}", maybe_processed=True
                ) from exc
            except BaseException:
                writer.close()
                raise
            if head.keep:
                self._release(upstream, conn)
            else:
                writer.close()
        return UpstreamResponse(head.status, head.headers, content)

    async def open(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamStream:
        """Send a request and return once the response head arrived; read the body as it
        comes, and ``close`` the stream on every way out."""
        request = self._encode(upstream, method, path, headers, body)
        slot = self._slot(upstream)
        await slot.acquire()
        try:
            conn, head = await self._exchange(upstream, request, False)
        except BaseException:
            slot.release()
            raise
        return UpstreamStream(self, upstream, conn, head)

    def _take_idle(self, upstream: Upstream) -> _Connection | None:
        """The most recently used idle connection still worth using, closing stale ones."""
        idle = self._idle.get(upstream)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn, since = idle.pop()
            fresh = now - since < self._idle_timeout
            if fresh and not conn[1].is_closing() and not conn[0].at_eof():
                return conn
            conn[1].close()
        return None

    async def _exchange(
        self, upstream: Upstream, request: bytes, idempotent: bool
    ) -> tuple[_Connection, _Head]:
        while True:
            conn = self._take_idle(upstream)
            reused = conn is not None
            if conn is None:
                try:
                    conn = await asyncio.open_connection(
                        upstream.host, upstream.port, ssl=self._ssl(upstream)
                    )
                except (OSError, ssl.SSLError) as exc:
                    raise UpstreamError(
                        f"cannot connect to {upstream.host}:{upstream.port}: {exc}",
                        maybe_processed=False,
                    ) from exc
            reader, writer = conn
            try:
                writer.write(request)
                head = await _read_head(reader)
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
                RuntimeError,
            ) as exc:
                # RuntimeError: uvloop's answer to writing on a transport already closed.
                writer.close()
                nothing_back = isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                if reused and idempotent and (nothing_back or not isinstance(exc, ValueError)):
                    continue  # the server closed an idle connection: a fresh one, once more
                raise UpstreamError(
                    f"upstream {upstream.host}:{upstream.port} broke the connection: {exc!r}",
                    maybe_processed=True,
                ) from exc
            except BaseException:
                writer.close()  # cancelled or timed out mid-exchange: the connection is unusable
                raise
            return conn, head

    def _release(self, upstream: Upstream, conn: _Connection) -> None:
        if conn[1].is_closing():
            return
        idle = self._idle[upstream]
        if len(idle) < self._max_idle:
            idle.append((conn, time.monotonic()))
        else:
            conn[1].close()

    async def close(self) -> None:
        for connections in self._idle.values():
            for (_, writer), _since in connections:
                writer.close()
        self._idle.clear()
