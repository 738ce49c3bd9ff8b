"""Where rate-limit and concurrency counters live: in this process, or in Redis.

Both sides keep the ``limits`` library's windows: requests per minute in an exact moving
window (a burst over the limit gets exactly the excess refused), tokens per minute in a
fixed one-minute window that counts every token delivered (a stream that runs over the
limit is not cut: the tokens it used make later requests wait). Windows are kept per scope,
not per limit value, so a limit lowered mid-minute applies at once.

In Redis, the library's ``RedisStorage`` (its moving window is one Lua script, atomic
across gateways), through redis-py's asyncio client (``implementation="redispy"``: the
library's default, coredis, is the less common client; redis-py is what most of Python
runs). In memory, :class:`LoopStorage`, a storage of the library's interface (its
strategies run on it) kept for one event loop: deques and dicts, no locks, no timer thread;
the hot path calls it directly, one call where the strategies make two. The library's own
memory storages were measured too slow for a gateway: the asynchronous one pays a thread
hop per key on every expiry pass (130 us a hit), the synchronous one inserts each hit at
the front of a list and re-slices every list from a timer thread every 10 ms (37 us a hit,
176 us with 120,000 requests in the window, mostly waiting for the interpreter lock).

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
from collections import deque
from typing import Any, Protocol

from limits.storage import MovingWindowSupport, Storage

__all__ = [
    "MINUTE",
    "RPM",
    "TPM",
    "Counters",
    "LoopStorage",
    "MemoryCounters",
    "RedisCounters",
    "StorageDown",
    "Window",
]

# Windows are kept per scope, not per limit value: a limit lowered mid-minute applies at
# once to what the scope already used.
RPM = "rpm/"  # storage keys: prefix + scope ("rpm/key:key_1")
TPM = "tpm/"
MINUTE = 60


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


_SWEEP_S = 60.0


class LoopStorage(Storage, MovingWindowSupport):
    """The ``limits`` storage interface (counters, moving windows) for one event loop.

    Only the loop's thread touches it, so it needs no lock; expired entries are dropped when
    their key is used, and keys nobody used for a window are swept once a minute, so a
    stream of one-off customers cannot grow it without bound."""

    STORAGE_SCHEME = None  # not registered under a URI: built directly

    def __init__(self) -> None:
        super().__init__()
        self._windows: dict[str, tuple[int, deque[float]]] = {}  # key -> (expiry, hit times)
        self._counters: dict[str, list[float]] = {}  # key -> [count, expires at]
        self._sweep_at = time.time() + _SWEEP_S

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def _sweep(self, now: float) -> None:
        self._sweep_at = now + _SWEEP_S
        for key, (expiry, events) in list(self._windows.items()):
            if not events or events[-1] <= now - expiry:
                del self._windows[key]
        for key, (_, expires) in list(self._counters.items()):
            if expires <= now:
                del self._counters[key]

    def _counter(self, key: str, now: float) -> list[float] | None:
        counter = self._counters.get(key)
        return counter if counter is not None and counter[1] > now else None

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._incr(key, expiry, amount)

    def _incr(self, key: str, expiry: int, amount: int) -> int:
        now = time.time()
        if now >= self._sweep_at:
            self._sweep(now)
        counter = self._counter(key, now)
        if counter is None:
            counter = self._counters[key] = [0, now + expiry]
        counter[0] += amount
        return int(counter[0])

    def get(self, key: str) -> int:
        counter = self._counter(key, time.time())
        return 0 if counter is None else int(counter[0])

    def get_expiry(self, key: str) -> float:
        now = time.time()
        counter = self._counter(key, now)
        return now if counter is None else counter[1]

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        count = len(self._windows) + len(self._counters)
        self._windows.clear()
        self._counters.clear()
        return count

    def clear(self, key: str) -> None:
        self._windows.pop(key, None)
        self._counters.pop(key, None)

    def _window(self, key: str, expiry: int, now: float) -> deque[float]:
        found = self._windows.get(key)
        if found is None:
            if now >= self._sweep_at:
                self._sweep(now)
            events: deque[float] = deque()
            self._windows[key] = (expiry, events)
            return events
        events = found[1]
        cutoff = now - expiry
        while events and events[0] <= cutoff:
            events.popleft()
        return events

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = time.time()
        events = self._window(key, expiry, now)
        if len(events) + amount > limit:
            return False
        events.extend([now] * amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        events = self._window(key, expiry, now)
        return (events[0], len(events)) if events else (now, 0)

    # The interface above, as the gateway's hot path calls it: one call where the library's
    # strategies make two, without the per-call error wrapping the library adds (this
    # storage raises nothing to wrap).

    def hit(self, key: str, limit: int, expiry: int) -> tuple[bool, float, int]:
        """``acquire_entry`` then ``get_moving_window``: admitted, oldest hit, hits."""
        now = time.time()
        events = self._window(key, expiry, now)
        admitted = len(events) < limit
        if admitted:
            events.append(now)
        return admitted, events[0] if events else now, len(events)

    def count(self, key: str) -> tuple[int, float]:
        """``get`` and ``get_expiry`` of a counter."""
        now = time.time()
        counter = self._counter(key, now)
        return (0, now) if counter is None else (int(counter[0]), counter[1])

    def add(self, key: str, expiry: int, amount: int) -> None:
        """``incr`` without its answer."""
        self._incr(key, expiry, amount)


class MemoryCounters:
    """Counters of this process (one gateway)."""

    def __init__(self) -> None:
        self.storage = LoopStorage()
        self._in_flight: dict[str, int] = {}

    async def hit_request(self, key: str, limit: int) -> Window:
        admitted, oldest, hits = self.storage.hit(RPM + key, limit, MINUTE)
        return Window(admitted, limit, limit - hits, oldest + MINUTE - time.time())

    async def tokens(self, key: str, limit: int) -> Window:
        used, expires = self.storage.count(TPM + key)
        return Window(used < limit, limit, limit - used, expires - time.time())

    def add_tokens(self, key: str, limit: int, tokens: int) -> None:
        self.storage.add(TPM + key, MINUTE, tokens)

    async def enter(self, key: str, limit: int) -> str | None:
        return "" if self.take(key, limit) else None

    def take(self, key: str, limit: int) -> bool:
        """``enter`` without a coroutine: whether a slot was taken."""
        held = self._in_flight.get(key, 0)
        if held >= limit:
            return False
        self._in_flight[key] = held + 1
        return True

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
        # Imported here: redis-py pulls in OpenTelemetry's SDK, which a gateway without
        # Redis (or without tracing) must not pay for.
        import redis.asyncio
        import redis.exceptions
        from limits.aio.storage import RedisStorage

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
        self._storage = storage
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
        # The library's moving window, one Lua script a call: atomic across gateways.
        storage, key = self._storage, RPM + key
        admitted = await self._call(storage.acquire_entry(key, limit, MINUTE))
        oldest, hits = await self._call(storage.get_moving_window(key, limit, MINUTE))
        return Window(admitted, limit, limit - hits, oldest + MINUTE - time.time())

    async def tokens(self, key: str, limit: int) -> Window:
        storage, key = self._storage, TPM + key
        used = await self._call(storage.get(key))
        expires = await self._call(storage.get_expiry(key)) if used else time.time()
        return Window(used < limit, limit, limit - used, expires - time.time())

    def add_tokens(self, key: str, limit: int, tokens: int) -> None:
        self._later(self._storage.incr(TPM + key, MINUTE, tokens))

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
