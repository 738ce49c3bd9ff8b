"""What the unit tests' loopback HTTP servers share: reading one request off a connection."""

from __future__ import annotations

import asyncio


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.1 request, head and ``content-length`` body, as the raw bytes sent.

    Raises ``asyncio.IncompleteReadError`` when the peer hangs up, which ends a server's loop.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)
