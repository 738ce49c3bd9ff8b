"""A minimal HTTP/1.1 client with pooled keep-alive connections, for gateway -> replica.

General-purpose clients spend more time per request than the whole budget the gateway has
(under 0.3 ms); replicas are our own, so the protocol subset they speak is small and known.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from modelport.core.routing import Upstream

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]

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


class UpstreamPool:
    """Keeps idle connections per replica and reuses them, retrying once on a stale one."""

    def __init__(self, timeout_s: float = 60.0, max_idle: int = 64) -> None:
        self._timeout = timeout_s
        self._max_idle = max_idle
        self._idle: defaultdict[Upstream, list[_Connection]] = defaultdict(list)

    async def request(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        head = [f"{method} {path} HTTP/1.1\r\nhost: {upstream.host}\r\n".encode()]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        request = b"".join(head) + body
        try:
            async with asyncio.timeout(self._timeout):
                return await self._exchange(upstream, request)
        except TimeoutError:
            raise UpstreamError(f"replica {upstream.host}:{upstream.port} timed out") from None

    async def _exchange(self, upstream: Upstream, request: bytes) -> UpstreamResponse:
        idle = self._idle[upstream]
        while True:
            reused = bool(idle)
            try:
                if reused:
                    reader, writer = idle.pop()
                else:
                    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
            except OSError as exc:
                raise UpstreamError(f"cannot connect to replica: {exc}") from exc
            try:
                writer.write(request)
                response, keep = await self._read(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                if reused:  # the replica closed an idle connection: try a fresh one
                    continue
                raise UpstreamError(f"replica broke the connection: {exc!r}") from exc
            except BaseException:
                writer.close()  # cancelled mid-response: the connection is unusable
                raise
            if keep and len(idle) < self._max_idle:
                idle.append((reader, writer))
            else:
                writer.close()
            return response

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[UpstreamResponse, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0][9:12])
        headers: list[tuple[bytes, bytes]] = []
        length = -1
        chunked = False
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = value.lower() != b"close"
            else:
                headers.append((name, value))
        if chunked:
            parts = []
            while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            body = b"".join(parts)
        elif length >= 0:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            keep = False
        return UpstreamResponse(status, headers, body), keep

    async def close(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()
