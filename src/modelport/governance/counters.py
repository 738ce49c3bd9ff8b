"""Where rate-limit and concurrency counters live: in this process, or in Redis.

Both sides are built on the ``limits`` library's storages and strategies: requests per
minute in an exact moving window (a burst over the limit gets exactly the excess refused),
tokens per minute in a fixed one-minute window that counts every token delivered (a stream
that runs over the limit is not cut: the tokens it used make later requests wait).

In memory the library's synchronous storage is used from the event loop: it only touches
dicts and lists, and its asynchronous twin pays a thread hop per key on every expiry pass
(measured: 11 us a hit against 130). Redis is reached through redis-py's asyncio client
(``limits``' ``redispy`` implementation): the library's own default, coredis, is the less
common client, and redis-py is what the rest of the Python world runs.

Concurrency is not a window: in memory it is a counter per scope; in Redis a sorted set per
scope whose members expire (a lease), so slots held by a gateway that died come free on
their own instead of leaking forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from typing import Any, Protocol

import limits.storage
import limits.strategies
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio import strategies as aio_strategies
from limits.aio.storage import RedisStorage

__all__ = ["Counters", "MemoryCounters", "RedisCounters", "StorageDown", "Window"]

_NAMESPACE = "MODELPORT"


class StorageDown(Exception):
    """The shared counters could not be reached (Redis down, or slower than its timeout)."""


class Window:
    """One limit's window after a look or a hit: what is left, and when it frees up."""

    __slots__ = ("admitted", "limit", "remaining", "reset_s")

    def __init__(self, admitted: bool, limit: int, remaining: int, reset_s: float) -> None:
        self.admitted = admitted
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s  # seconds until a unit of the window is free again


class Counters(Protocol):
    """The counters the guards keep; ``key`` names a scope, such as ``key:key_1``."""

    async def hit_request(self, key: str, limit: int) -> Window:
        """Take one request from a per-minute moving window, if one is left."""

    async def tokens(self, key: str, limit: int) -> Window:
        """The per-minute token window as it stands (``admitted``: a token is left)."""

    def add_tokens(self, key: str, limit: int, tokens: int) -> None:
        """Count tokens delivered (always counted, even past the limit)."""

    async def enter(self, key: str, limit: int) -> str | None:
        """Take a concurrency slot; its lease id, or None when every slot is taken."""

    def leave(self, key: str, lease: str) -> None:
        """Give back a concurrency slot."""

    def renew(self, key: str, lease: str) -> None:
        """Keep a long call's slot from expiring (Redis leases; a no-op in memory)."""

    @property
    def renew_every_s(self) -> float:
        """How often a call still running renews its slot (inf: never)."""

    async def close(self) -> None: ...


def _item(cache: dict[int, RateLimitItem], limit: int) -> RateLimitItem:
    item = cache.get(limit)
    if item is None:
        item = cache[limit] = RateLimitItemPerMinute(limit, namespace=_NAMESPACE)
    return item


class MemoryCounters:
    """Counters of this process (one gateway)."""

    def __init__(self) -> None:
        storage = limits.storage.MemoryStorage()
        self._requests = limits.strategies.MovingWindowRateLimiter(storage)
        self._tokens = limits.strategies.FixedWindowRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}
        self._in_flight: dict[str, int] = {}

    async def hit_request(self, key: str, limit: int) -> Window:
        item = _item(self._items, limit)
        admitted = self._requests.hit(item, key)
        reset_at, remaining = self._requests.get_window_stats(item, key)
        return Window(admitted, limit, remaining, reset_at - time.time())

    async def tokens(self, key: str, limit: int) -> Window:
        item = _item(self._items, limit)
        reset_at, remaining = self._tokens.get_window_stats(item, key)
        return Window(remaining > 0, limit, remaining, reset_at - time.time())

    def add_tokens(self, key: str, limit: int, tokens: int) -> None:
        self._tokens.hit(_item(self._items, limit), key, cost=tokens)

    async def enter(self, key: str, limit: int) -> str | None:
        held = self._in_flight.get(key, 0)
        if held >= limit:
            return None
        self._in_flight[key] = held + 1
        return ""

    def leave(self, key: str, lease: str) -> None:
        held = self._in_flight.get(key, 0) - 1
        if held > 0:
            self._in_flight[key] = held
        else:
            self._in_flight.pop(key, None)

    def renew(self, key: str, lease: str) -> None:
        pass

    renew_every_s = float("inf")  # slots in memory never expire: they die with the process

    def in_flight(self, key: str) -> int:
        """Slots taken now (for tests and diagnostics)."""
        return self._in_flight.get(key, 0)

    async def close(self) -> None:
        pass


# Takes a slot if fewer than ARGV[1] unexpired leases are held; Redis' own clock, so that
# gateways with different clocks agree. KEYS[1]: the scope's sorted set.
# ARGV: limit, lease id, lease seconds.
_ENTER = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""
_RENEW = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZADD', KEYS[1], 'XX', t + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


class RedisCounters:
    """Counters shared by every gateway that uses the same Redis.

    Every call is bounded by ``timeout_s``; a failure raises :class:`StorageDown`, and for
    ``retry_after_s`` afterwards calls fail at once instead of waiting on a Redis that is
    down again (the guards then admit or refuse, as configured)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.25,
        lease_s: float = 600.0,
        retry_after_s: float = 5.0,
    ) -> None:
        import redis.asyncio
        import redis.exceptions

        self._errors = (redis.exceptions.RedisError, OSError, TimeoutError)
        self._client: Any = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        scheme = url.partition("://")[0]
        storage = RedisStorage(
            f"async+{scheme}://{url.partition('://')[2]}",
            implementation="redispy",
            key_prefix="modelport",
            connection_pool=self._client.connection_pool,  # type: ignore[arg-type] # typed too narrowly
        )
        self._requests = aio_strategies.MovingWindowRateLimiter(storage)
        self._tokens = aio_strategies.FixedWindowRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}
        self._timeout_s = timeout_s
        self._lease_s = lease_s
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._enter = self._client.register_script(_ENTER)
        self._renew = self._client.register_script(_RENEW)
        self._leases = itertools.count()
        self._prefix = os.urandom(6).hex()  # lease ids unique across gateways
        self._background: set[asyncio.Task[Any]] = set()

    async def _call(self, work: Any) -> Any:
        if time.monotonic() < self._down_until:
            work.close()
            raise StorageDown("redis was unreachable moments ago")
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                return await work
        except self._errors as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            raise StorageDown(f"redis: {exc!r}") from exc

    def _later(self, work: Any) -> None:
        """Run ``work`` without waiting for it (counting tokens, giving slots back)."""

        async def run() -> None:
            # Lost when Redis is down: a window undercounts rather than a request waits.
            with contextlib.suppress(StorageDown):
                await self._call(work)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def hit_request(self, key: str, limit: int) -> Window:
        item = _item(self._items, limit)
        admitted = await self._call(self._requests.hit(item, key))
        reset_at, remaining = await self._call(self._requests.get_window_stats(item, key))
        return Window(admitted, limit, remaining, reset_at - time.time())

    async def tokens(self, key: str, limit: int) -> Window:
        item = _item(self._items, limit)
        reset_at, remaining = await self._call(self._tokens.get_window_stats(item, key))
        return Window(remaining > 0, limit, remaining, reset_at - time.time())

    def add_tokens(self, key: str, limit: int, tokens: int) -> None:
        self._later(self._tokens.hit(_item(self._items, limit), key, cost=tokens))

    def _slots(self, key: str) -> str:
        return f"modelport/concurrency/{key}"

    async def enter(self, key: str, limit: int) -> str | None:
        lease = f"{self._prefix}-{next(self._leases)}"
        taken = await self._call(
            self._enter(keys=[self._slots(key)], args=[limit, lease, self._lease_s])
        )
        return lease if taken else None

    def leave(self, key: str, lease: str) -> None:
        self._later(self._client.zrem(self._slots(key), lease))

    def renew(self, key: str, lease: str) -> None:
        self._later(self._renew(keys=[self._slots(key)], args=[lease, self._lease_s]))

    @property
    def renew_every_s(self) -> float:
        """How often a call still running renews its concurrency lease."""
        return self._lease_s / 2

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=self._timeout_s * 2)
        await self._client.aclose()
