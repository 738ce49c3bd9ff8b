"""The raw-ASGI body bounds and the shared bearer-token parser (pure logic, fake receives)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest

from modelport.core.asgi import BoundedReceive, bearer_token, read_body
from modelport.core.errors import PayloadTooLarge, RequestTimeout


def _receive(parts: Iterable[bytes | float], *, then: str = "http.disconnect") -> Any:
    """A ``receive`` giving each bytes part as a chunk, sleeping for each float."""
    queue = list(parts)
    chunks = sum(isinstance(part, bytes) for part in queue)
    given = 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        while queue and isinstance(queue[0], float):
            await asyncio.sleep(queue.pop(0))  # type: ignore[arg-type]
        if not queue:
            await asyncio.sleep(3600)  # a client that stopped sending
            return {"type": then}
        given += 1
        return {"type": "http.request", "body": queue.pop(0), "more_body": given < chunks}

    return receive


async def test_read_body_joins_chunks() -> None:
    assert await read_body(_receive([b"ab", b"cd", b""]), 10) == b"abcd"
    assert await read_body(_receive([b"abcd"]), 4) == b"abcd"


async def test_read_body_refuses_at_the_byte_past_the_limit() -> None:
    # The last chunk never comes: the refusal cannot wait for the end of the body.
    receive = _receive([b"x" * 4, b"x" * 4, b"x", 3600.0, b""])
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 8 bytes"):
        await read_body(receive, 8)


async def test_read_body_refuses_a_declared_length_unread() -> None:
    with pytest.raises(PayloadTooLarge, match="request body of 9 bytes"):
        await read_body(_receive([]), 8, declared=9)


async def test_read_body_times_out_a_trickled_body() -> None:
    trickle = _receive([b"x", 0.05] * 100 + [b""])
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"not complete within 0\.3 s") as info:
        await read_body(trickle, 1000, timeout_s=0.3)
    assert info.value.status == 408
    assert 0.25 < time.monotonic() - started < 1.0


async def test_read_body_times_out_a_client_that_sends_nothing() -> None:
    with pytest.raises(RequestTimeout):
        await read_body(_receive([]), 1000, timeout_s=0.1)


async def test_a_disconnect_ends_the_body() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    assert await read_body(receive, 10) == b""


async def test_idle_limit_allows_a_long_body_without_pauses() -> None:
    steady = _receive([b"x", 0.02] * 20 + [b""])
    bounded = BoundedReceive(steady, limit=100, timeout_s=10, idle_s=0.2)
    while not bounded.done:
        await bounded()
    assert bounded.size == 20
    paused = BoundedReceive(_receive([b"x", 0.5, b""]), limit=100, timeout_s=10, idle_s=0.2)
    await paused()
    with pytest.raises(RequestTimeout, match=r"no part of the request body arrived for 0\.2 s"):
        await paused()
    assert isinstance(paused.error, RequestTimeout)
    with pytest.raises(RequestTimeout):  # asked again, it does not read on
        await paused()


async def test_after_the_body_receive_waits_unbounded() -> None:
    # Servers wait on receive() for http.disconnect after the body: that is no slow body.
    bounded = BoundedReceive(_receive([b"done"]), limit=10, timeout_s=0.05)
    assert (await bounded())["body"] == b"done"
    await asyncio.sleep(0.1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await bounded()
    assert bounded.error is None


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer abc", b"abc"),
        (b"BEARER  abc ", b"abc"),
        (b" Bearer abc", b"abc"),
        (b"Basic abc", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Bearerabc", None),
        (None, None),
    ],
)
def test_bearer_token_scheme_is_case_insensitive(value: bytes | None, token: bytes | None) -> None:
    headers = [(b"authorization", value)] if value is not None else []
    assert bearer_token({"headers": [(b"x-other", b"1"), *headers]}) == token
