"""Rate limit and concurrency guards, on memory counters and on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelport.core.errors import TooManyRequests, Unavailable
from modelport.core.usage import Units
from modelport.governance.admission import NO_HOLD, Admission, Caller, Hold
from modelport.governance.counters import Counters, MemoryCounters, RedisCounters
from modelport.governance.rate_limits import (
    ConcurrencyGuard,
    Limit,
    LimitTable,
    RateLimitGuard,
    duration,
)
from tests.redis_server import free_port, redis_server


def caller(**changes: object) -> Caller:
    fields: dict[str, object] = {
        "key_id": "key_a",
        "project": "default",
        "team": "default",
        "customer": "",
        "endpoint": "chat",
        "model": "m",
        "task": "chat",
        "input_estimate": 10,
        "max_output": None,
    }
    fields.update(changes)
    return Caller(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    url: str = request.getfixturevalue("redis_url")
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    shared = RedisCounters(url)
    yield shared
    await shared.close()


def headers_of(hold_or_error: Hold | TooManyRequests) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in hold_or_error.headers}


def test_duration_is_openais_format() -> None:
    assert duration(0.25) == "250ms"
    assert duration(1) == "1s"
    assert duration(59.2) == "1m0s"
    assert duration(360) == "6m0s"
    assert duration(3723) == "1h2m3s"


def test_table_finds_every_scope_of_a_caller_that_has_a_limit() -> None:
    table = LimitTable(
        {
            ("key", "key_a"): Limit(rpm=5),
            ("team", "default"): Limit(tpm=100),
            ("endpoint", "other"): Limit(rpm=1),
            ("customer", "acme"): Limit(concurrency=2),
        }
    )
    assert table.rated and table.concurrent
    assert [s for s, _ in table.scopes(caller())] == ["key:key_a", "team:default"]
    assert [s for s, _ in table.scopes(caller(customer="acme"))] == [
        "key:key_a",
        "team:default",
        "customer:acme",
    ]
    with pytest.raises(ValueError, match="scope"):
        LimitTable({("planet", "x"): Limit(rpm=1)})
    assert Limit(rpm=5, tpm=None).tightest(Limit(rpm=9, tpm=7)) == Limit(rpm=5, tpm=7)


async def test_no_limits_cost_no_hold(counters: Counters) -> None:
    guard = RateLimitGuard(counters)
    assert await guard.admit(caller()) is NO_HOLD
    guard.publish(LimitTable({("endpoint", "elsewhere"): Limit(rpm=1)}))
    assert await guard.admit(caller()) is NO_HOLD
    assert await ConcurrencyGuard(counters).admit(caller()) is NO_HOLD


async def test_a_burst_over_rpm_gets_exactly_the_excess_refused(counters: Counters) -> None:
    guard = RateLimitGuard(counters)
    guard.publish(LimitTable({("endpoint", "chat"): Limit(rpm=7)}))
    results = await asyncio.gather(
        *(guard.admit(caller()) for _ in range(10)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, TooManyRequests)]
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 3 and len(admitted) == 7
    error = refused[0]
    assert "7 requests per minute" in error.message and "endpoint 'chat'" in error.message
    assert error.details == {"limit": "rpm", "scope": "endpoint:chat"}
    headers = headers_of(error)
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "7"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    remaining = sorted(int(headers_of(h)["x-ratelimit-remaining-requests"]) for h in admitted)
    if isinstance(counters, MemoryCounters):
        assert remaining == [0, 1, 2, 3, 4, 5, 6]
    else:  # read after the hit, in a second round trip: others may have hit in between
        assert remaining[0] == 0 and remaining[-1] <= 6


async def test_the_tightest_scope_applies_and_names_itself(counters: Counters) -> None:
    guard = RateLimitGuard(counters)
    guard.publish(
        LimitTable({("project", "default"): Limit(rpm=100), ("key", "key_a"): Limit(rpm=2)})
    )
    for _ in range(2):
        hold = await guard.admit(caller())
        assert headers_of(hold)["x-ratelimit-limit-requests"] == "2"
    with pytest.raises(TooManyRequests, match="key 'key_a'"):
        await guard.admit(caller())
    # Another key of the same project still has the project's allowance.
    hold = await guard.admit(caller(key_id="key_b"))
    assert headers_of(hold)["x-ratelimit-limit-requests"] == "100"


async def test_tokens_are_counted_as_delivered_and_refuse_once_used_up(
    counters: Counters,
) -> None:
    guard = RateLimitGuard(counters)
    guard.publish(LimitTable({("endpoint", "chat"): Limit(tpm=50)}))
    hold = await guard.admit(caller())
    assert headers_of(hold)["x-ratelimit-remaining-tokens"] == "50"
    for sent in (1, 5, 20):  # a stream's running total, chunk by chunk
        hold.delivered(sent)
    await asyncio.sleep(0.05)  # Redis counts in the background
    seen = headers_of(await guard.admit(caller()))
    assert seen["x-ratelimit-remaining-tokens"] == "30"  # mid-stream: 20 output tokens so far
    hold.release(200, Units(input_tokens=8, output_tokens=24))  # 8 in + 4 more out
    await asyncio.sleep(0.05)
    seen = headers_of(await guard.admit(caller()))
    assert seen["x-ratelimit-remaining-tokens"] == "18"
    unary = await guard.admit(caller())
    unary.release(200, Units(input_tokens=10, output_tokens=10))  # past the limit: counted
    await asyncio.sleep(0.05)
    with pytest.raises(TooManyRequests, match="50 tokens per minute") as refused:
        await guard.admit(caller())
    headers = headers_of(refused.value)
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "50"
    assert refused.value.details["limit"] == "tpm"


async def test_a_token_refusal_does_not_use_a_request(counters: Counters) -> None:
    guard = RateLimitGuard(counters)
    guard.publish(LimitTable({("endpoint", "chat"): Limit(rpm=3, tpm=5)}))
    hold = await guard.admit(caller())
    hold.release(200, Units(input_tokens=5))
    await asyncio.sleep(0.05)
    for _ in range(3):
        with pytest.raises(TooManyRequests, match="tokens"):
            await guard.admit(caller())
    guard.publish(LimitTable({("endpoint", "chat"): Limit(rpm=3)}))
    for _ in range(2):
        await guard.admit(caller())
    with pytest.raises(TooManyRequests, match="requests"):
        await guard.admit(caller())


async def test_concurrency_slots_are_taken_and_given_back(counters: Counters) -> None:
    guard = ConcurrencyGuard(counters)
    guard.publish(
        LimitTable({("endpoint", "chat"): Limit(concurrency=2), ("key", "key_a"): Limit(rpm=9)})
    )
    first, second = await guard.admit(caller()), await guard.admit(caller())
    with pytest.raises(TooManyRequests, match="2 requests at a time") as refused:
        await guard.admit(caller())
    assert headers_of(refused.value)["retry-after"] == "1"
    first.release(200, None)
    await asyncio.sleep(0.05)
    third = await guard.admit(caller())
    second.release(499, None)
    third.release(502, None)
    await asyncio.sleep(0.05)
    holds = [await guard.admit(caller()) for _ in range(2)]
    for hold in holds:
        hold.release(200, None)


async def test_a_refusal_releases_what_earlier_guards_took(counters: Counters) -> None:
    table = LimitTable({("endpoint", "chat"): Limit(concurrency=1), ("key", "key_a"): Limit(rpm=1)})
    concurrency, rates = ConcurrencyGuard(counters), RateLimitGuard(counters)
    concurrency.publish(table)
    rates.publish(table)
    admission = Admission([concurrency, rates])
    hold = await admission.admit(caller())
    hold.release(200, None)
    await asyncio.sleep(0.05)
    with pytest.raises(TooManyRequests, match="requests per minute"):
        await admission.admit(caller())
    await asyncio.sleep(0.05)
    # The refused call's concurrency slot went back: another key gets it.
    other = await admission.admit(caller(key_id="key_b"))
    other.release(200, None)


async def test_redis_counters_are_shared_by_gateways(redis_url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    one, two = RedisCounters(redis_url), RedisCounters(redis_url)
    try:
        guards = [RateLimitGuard(one), RateLimitGuard(two)]
        slots = [ConcurrencyGuard(one), ConcurrencyGuard(two)]
        table = LimitTable({("endpoint", "chat"): Limit(rpm=4, concurrency=1)})
        for guard in [*guards, *slots]:
            guard.publish(table)
        results = await asyncio.gather(
            *(guards[i % 2].admit(caller()) for i in range(6)), return_exceptions=True
        )
        assert sum(isinstance(r, TooManyRequests) for r in results) == 2
        hold = await slots[0].admit(caller())
        with pytest.raises(TooManyRequests):
            await slots[1].admit(caller())
        hold.release(200, None)
        await asyncio.sleep(0.05)
        (await slots[1].admit(caller())).release(200, None)
    finally:
        await one.close()
        await two.close()


async def test_a_dead_gateways_slots_expire(redis_url: str) -> None:
    dead, alive = RedisCounters(redis_url, lease_s=0.5), RedisCounters(redis_url)
    try:
        assert await dead.enter("endpoint:leaky", 1) is not None  # never given back
        assert await alive.enter("endpoint:leaky", 1) is None
        await asyncio.sleep(0.7)
        assert await alive.enter("endpoint:leaky", 1) is not None
    finally:
        await dead.close()
        await alive.close()


async def test_redis_down_admits_or_refuses_as_configured_without_waiting() -> None:
    port = free_port()
    with redis_server(port) as url:
        open_counters = RedisCounters(url, timeout_s=0.2)
        closed_counters = RedisCounters(url, timeout_s=0.2)
        table = LimitTable({("endpoint", "chat"): Limit(rpm=100, concurrency=5)})
        fail_open = RateLimitGuard(open_counters)
        fail_closed = RateLimitGuard(closed_counters, fail_open=False)
        slots = ConcurrencyGuard(closed_counters, fail_open=False)
        for guard in (fail_open, fail_closed, slots):
            guard.publish(table)
        assert headers_of(await fail_open.admit(caller()))  # Redis is up: counted
    # Redis is gone now.
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await fail_open.admit(caller()) is NO_HOLD
    with pytest.raises(Unavailable) as refused:
        await fail_closed.admit(caller())
    assert dict(refused.value.headers)[b"retry-after"] == b"5"
    with pytest.raises(Unavailable):
        await slots.admit(caller())
    # Later calls do not wait on it again: the failure is remembered for a few seconds.
    for _ in range(20):
        assert await fail_open.admit(caller()) is NO_HOLD
    assert loop.time() - started < 1.5
    await open_counters.close()
    await closed_counters.close()


def test_loop_storage_serves_the_librarys_strategies() -> None:
    """LoopStorage keeps the limits library's storage interface: its strategies run on it."""
    from limits import RateLimitItemPerMinute
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    from modelport.governance.counters import LoopStorage

    storage = LoopStorage()
    moving = MovingWindowRateLimiter(storage)
    three = RateLimitItemPerMinute(3)
    assert [moving.hit(three, "a") for _ in range(4)] == [True, True, True, False]
    assert moving.get_window_stats(three, "a").remaining == 0
    fixed = FixedWindowRateLimiter(storage)
    ten = RateLimitItemPerMinute(10)
    assert fixed.hit(ten, "b", cost=7) and not fixed.hit(ten, "b", cost=7)
    assert fixed.get_window_stats(ten, "b").remaining == 0
    storage.clear(three.key_for("a"))
    assert moving.hit(three, "a")
