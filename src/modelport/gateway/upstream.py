"""A minimal HTTP/1.1 client with pooled keep-alive connections, for gateway -> replica.

General-purpose clients spend more time per request than the whole budget the gateway has
(under 0.3 ms); replicas are our own, so the protocol subset they speak is small and known:
``content-length`` bodies, and ``chunked`` ones for streams.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from modelport.core.routing import Upstream

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse", "UpstreamStream"]

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class UpstreamError(Exception):
    """The replica could not be reached or broke the connection before answering."""


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


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The data of a chunked body, one HTTP chunk at a time (one SSE event, for a stream)."""
    while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
        yield await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")


class UpstreamStream:
    """A response whose body is read as it arrives; ``close`` pools the connection if it can."""

    def __init__(self, pool: UpstreamPool, upstream: Upstream, conn: _Connection, head: _Head):
        self._pool = pool
        self._upstream = upstream
        self._conn = conn
        self._head = head
        self._done = False
        self._closed = False
        self.status = head.status
        self.headers = head.headers

    async def body(self) -> AsyncIterator[bytes]:
        reader = self._conn[0]
        if self._head.chunked:
            async for chunk in _chunks(reader):
                yield chunk
        elif self._head.length >= 0:
            yield await reader.readexactly(self._head.length)
        else:
            yield await reader.read()
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


class UpstreamPool:
    """Keeps idle connections per replica and reuses them, retrying once on a stale one."""

    def __init__(self, timeout_s: float = 60.0, max_idle: int = 64) -> None:
        self._timeout = timeout_s
        self._max_idle = max_idle
        self._idle: defaultdict[Upstream, list[_Connection]] = defaultdict(list)
        self._tls: ssl.SSLContext | None = None

    def _ssl(self, upstream: Upstream) -> ssl.SSLContext | None:
        if not upstream.tls:
            return None
        if self._tls is None:
            self._tls = ssl.create_default_context()  # verifies the server's certificate
        return self._tls

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
    ) -> UpstreamResponse:
        """Send a request and read the whole response."""
        request = self._encode(upstream, method, path, headers, body)
        try:
            async with asyncio.timeout(self._timeout):
                conn, head = await self._exchange(upstream, request)
                reader, writer = conn
                try:
                    if head.chunked:
                        content = b"".join([chunk async for chunk in _chunks(reader)])
                    elif head.length >= 0:
                        content = await reader.readexactly(head.length)
                    else:
                        content = await reader.read()
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    writer.close()
                    raise UpstreamError(f"replica broke the connection: {exc!r}") from exc
                except BaseException:
                    writer.close()
                    raise
        except TimeoutError:
            raise UpstreamError(f"replica {upstream.host}:{upstream.port} timed out") from None
        if head.keep:
            self._release(upstream, conn)
        else:
            conn[1].close()
        return UpstreamResponse(head.status, head.headers, content)

    async def open(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamStream:
        """Send a request and return once the response head arrived; read the body as it comes."""
        request = self._encode(upstream, method, path, headers, body)
        try:
            async with asyncio.timeout(self._timeout):
                conn, head = await self._exchange(upstream, request)
        except TimeoutError:
            raise UpstreamError(f"replica {upstream.host}:{upstream.port} timed out") from None
        return UpstreamStream(self, upstream, conn, head)

    async def _exchange(self, upstream: Upstream, request: bytes) -> tuple[_Connection, _Head]:
        idle = self._idle[upstream]
        while True:
            reused = bool(idle)
            try:
                if reused:
                    reader, writer = idle.pop()
                else:
                    reader, writer = await asyncio.open_connection(
                        upstream.host, upstream.port, ssl=self._ssl(upstream)
                    )
            except OSError as exc:
                raise UpstreamError(f"cannot connect to replica: {exc}") from exc
            try:
                writer.write(request)
                head = await _read_head(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
                # RuntimeError: uvloop's answer to writing on a transport already closed.
                writer.close()
                if reused:  # the replica closed an idle connection: try a fresh one
                    continue
                raise UpstreamError(f"replica broke the connection: {exc!r}") from exc
            except BaseException:
                writer.close()  # cancelled mid-response: the connection is unusable
                raise
            return (reader, writer), head

    def _release(self, upstream: Upstream, conn: _Connection) -> None:
        idle = self._idle[upstream]
        if conn[1].is_closing():
            return
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn[1].close()

    async def close(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()
