"""The budget ledger in Redis, shared by every gateway that uses the same ``MODELPORT_REDIS_URL``.

Each line is one hash: ``s`` (spent), ``r`` (reserved), ``t`` (``since``, unix microseconds)
and ``z`` (seeded), under ``modelport:{budgets}:<period>:<period id>:<kind>:<name>`` (the
name last, so no name can make two lines' keys equal; the ``{budgets}`` hash tag keeps every
line in one slot of a Redis Cluster, as multi-key scripts need). Every step is one Lua
script, so it is atomic across gateways: a reservation checks every line against its cap and
adds to all of them, or to none. Keys expire two days (daily) or 32 days (monthly) after
their last write: a period's lines outlive it long enough for calls in flight across its end
to give their reservations back.

Redis numbers are 64-bit integers; Lua compares them as doubles, exact to the nano-USD below
2**53 nano-USD (about 9 million USD) per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis

from modelport.governance.budget_ledger import LineKey, LineState, Refusal

__all__ = ["RedisLedger"]

_PREFIX = "modelport:{budgets}:"
_TTL_S = {"daily": 2 * 86400, "monthly": 32 * 86400}

# ARGV: amount, now_us, caps (n), ttls (n)
_RESERVE = """
local n = #KEYS
local amount = tonumber(ARGV[1])
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 's', 'r')
  local spent = tonumber(v[1] or '0')
  local reserved = tonumber(v[2] or '0')
  local remaining = tonumber(ARGV[2 + i]) - spent - reserved
  if remaining <= 0 or amount > remaining then
    return {i, v[1] or '0', v[2] or '0'}
  end
end
for i = 1, n do
  redis.call('HSETNX', KEYS[i], 't', ARGV[2])
  redis.call('HINCRBY', KEYS[i], 'r', ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2 + n + i])
end
return {0}
"""
# KEYS: the reserved lines (ARGV[1] of them), then the spent lines.
# ARGV: count of reserved lines, minus the amount, cost, now_us, ttls of the spent lines
_SETTLE = """
local nr = tonumber(ARGV[1])
for i = 1, nr do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('HINCRBY', KEYS[i], 'r', ARGV[2]) < 0 then
      redis.call('HSET', KEYS[i], 'r', 0)
    end
  end
end
for i = nr + 1, #KEYS do
  redis.call('HSETNX', KEYS[i], 't', ARGV[4])
  redis.call('HINCRBY', KEYS[i], 's', ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[4 + i - nr])
end
return 0
"""
# ARGV: now_us, ttls
_TRACK = """
local out = {}
for i = 1, #KEYS do
  if redis.call('HSETNX', KEYS[i], 't', ARGV[1]) == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[1 + i])
  end
  local v = redis.call('HMGET', KEYS[i], 's', 'r', 't', 'z')
  out[i] = {v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0'}
end
return out
"""
# ARGV: since, amount
_SEED = """
local v = redis.call('HMGET', KEYS[1], 't', 'z')
if v[1] ~= ARGV[1] or v[2] == '1' then
  return 0
end
redis.call('HINCRBY', KEYS[1], 's', ARGV[2])
redis.call('HSET', KEYS[1], 'z', '1')
return 1
"""


def _name(key: LineKey) -> str:
    kind, name, period, period_id = key
    return f"{_PREFIX}{period}:{period_id}:{kind}:{name}"


def _ttl(key: LineKey) -> int:
    return _TTL_S.get(key[2], _TTL_S["monthly"])


def _state(values: Sequence[Any]) -> LineState:
    spent, reserved, since, seeded = (_text(v) for v in values)
    return LineState(int(spent or 0), int(reserved or 0), int(since or 0), seeded == "1")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLedger:
    """Budget lines in Redis (``redis-py``'s asyncio client); see the module's docstring."""

    def __init__(self, url: str, *, timeout_s: float = 0.25) -> None:
        # Bounded: a Redis that does not answer fails the call (the guard then admits or
        # refuses, as configured) rather than holding it.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._track = self._redis.register_script(_TRACK)
        self._seed = self._redis.register_script(_SEED)

    async def reserve(
        self, keys: Sequence[LineKey], caps: Sequence[int], amount: int, now_us: int
    ) -> Refusal | None:
        args = [amount, now_us, *caps, *(_ttl(k) for k in keys)]
        result = await self._reserve(keys=[_name(k) for k in keys], args=args)
        if int(result[0]) == 0:
            return None
        return Refusal(int(result[0]) - 1, int(_text(result[1])), int(_text(result[2])))

    async def settle(
        self,
        reserved: Sequence[LineKey],
        amount: int,
        spent: Sequence[LineKey],
        cost: int,
        now_us: int,
    ) -> None:
        names = [_name(k) for k in (*reserved, *spent)]
        args = [len(reserved), -amount, cost, now_us, *(_ttl(k) for k in spent)]
        await self._settle(keys=names, args=args)

    async def track(self, keys: Sequence[LineKey], now_us: int) -> dict[LineKey, LineState]:
        if not keys:
            return {}
        args = [now_us, *(_ttl(k) for k in keys)]
        rows = await self._track(keys=[_name(k) for k in keys], args=args)
        return {key: _state(row) for key, row in zip(keys, rows, strict=True)}

    async def seed(self, key: LineKey, since: int, amount: int) -> bool:
        return int(await self._seed(keys=[_name(key)], args=[since, amount])) == 1

    async def read(self, keys: Sequence[LineKey]) -> dict[LineKey, LineState]:
        if not keys:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(_name(key), "s", "r", "t", "z")
            rows = await pipe.execute()
        return {key: _state(row) for key, row in zip(keys, rows, strict=True)}

    def prune(self, current: set[str]) -> None:
        pass  # keys expire by themselves

    async def aclose(self) -> None:
        await self._redis.aclose()
