"""Budget ledgers (memory and a real redis-server) and the budget guard: reserve, settle,
refuse naming the budget, and never let concurrent calls hold more than a cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from modelport.core.usage import Units
from modelport.governance.admission import NO_HOLD, Admission, Caller
from modelport.governance.budget_ledger import BudgetLedger, MemoryLedger, fits
from modelport.governance.budget_redis import RedisLedger
from modelport.governance.budgets import Budget, BudgetExhausted, BudgetGuard, current_period
from modelport.observability.pricing import Price, PriceBook

USD = 1_000_000_000
MILLI = USD // 1000  # one call's price below: $1 per 1,000 requests
LINE = ("project", "web", "monthly", "2026-11")
DAY = ("project", "web", "daily", "2026-11-30")


def caller(**changes: object) -> Caller:
    fields: dict[str, object] = {
        "key_id": "key_a",
        "project": "web",
        "team": "red",
        "customer": "",
        "endpoint": "bc",
        "model": "bc",
        "task": "tabular",
        "input_estimate": 10,
        "max_output": None,
        "version": 1,
    }
    fields.update(changes)
    return Caller(**fields)  # type: ignore[arg-type]


def book(**prices: str) -> PriceBook:
    from modelport.observability.pricing import parse_usd

    units = prices or {"per_1k_requests": "1"}
    return PriceBook([Price("endpoint", "bc", u, parse_usd(v), 0.0) for u, v in units.items()])


@pytest.fixture(params=["memory", "redis"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[BudgetLedger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    url: str = request.getfixturevalue("redis_url")
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    shared = RedisLedger(url, timeout_s=5.0)  # a loaded test machine: no flaky timeouts
    yield shared
    await shared.aclose()


def test_fits_needs_something_left_and_the_amount_to_fit() -> None:
    assert fits(10, 0, 0, 10)
    assert not fits(10, 0, 0, 11)
    assert not fits(10, 6, 4, 0)  # used up: even a free call is refused
    assert not fits(0, 0, 0, 0)  # a cap of 0 blocks the scope
    assert fits(10, 9, 0, 0)


def test_periods_are_utc_days_and_months() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    day, month = current_period("daily", now), current_period("monthly", now)
    assert (day.id, day.resets_at) == ("2026-12-31", "2027-01-01T00:00:00Z")
    assert (month.id, month.resets_at) == ("2026-12", "2027-01-01T00:00:00Z")
    feb = current_period("monthly", datetime(2028, 2, 10, tzinfo=UTC).timestamp())
    assert (feb.id, feb.resets_at) == ("2028-02", "2028-03-01T00:00:00Z")


async def test_reserve_counts_against_the_cap_and_refuses_without_changing_anything(
    ledger: BudgetLedger,
) -> None:
    for _ in range(3):
        assert await ledger.reserve([LINE, DAY], [10, 100], 3, 1) is None
    refusal = await ledger.reserve([LINE, DAY], [10, 100], 3, 2)
    assert refusal is not None and (refusal.index, refusal.spent, refusal.reserved) == (0, 0, 9)
    state = await ledger.read([LINE, DAY])
    assert (state[LINE].reserved, state[DAY].reserved) == (9, 9)  # the refusal added nothing
    # Settling gives the reservation back and adds the real (smaller) cost: room again.
    await ledger.settle([LINE, DAY], 3, [LINE, DAY], 1, 3)
    state = await ledger.read([LINE])
    assert (state[LINE].spent, state[LINE].reserved, state[LINE].since) == (1, 6, 1)
    assert await ledger.reserve([LINE], [10], 3, 4) is None
    assert await ledger.reserve([LINE], [10], 1, 4) is not None  # 1 + 9 reserved = 10: full


async def test_a_line_is_seeded_once_and_only_the_line_created_at_since(
    ledger: BudgetLedger,
) -> None:
    tracked = await ledger.track([LINE], 1000)
    assert tracked[LINE].since == 1000 and not tracked[LINE].seeded
    assert (await ledger.track([LINE], 2000))[LINE].since == 1000  # created once
    assert not await ledger.seed(LINE, 999, 50)  # another line's since: not this one
    assert await ledger.seed(LINE, 1000, 50)
    assert not await ledger.seed(LINE, 1000, 50)  # once
    await ledger.settle([], 0, [LINE], 7, 3000)
    state = (await ledger.read([LINE]))[LINE]
    assert (state.spent, state.seeded) == (57, True)


async def test_fifty_concurrent_reservations_admit_exactly_what_fits(
    ledger: BudgetLedger,
) -> None:
    results = await asyncio.gather(
        *(ledger.reserve([LINE], [10 * MILLI], MILLI, 1) for _ in range(50))
    )
    assert sum(r is None for r in results) == 10
    assert (await ledger.read([LINE]))[LINE].reserved == 10 * MILLI


async def test_guard_reserves_the_estimate_and_settles_the_priced_units(
    ledger: BudgetLedger,
) -> None:
    guard = BudgetGuard(ledger, book(per_1k_requests="1", per_1k_rows="0.002"))
    guard.publish([Budget("project", "web", monthly=10 * MILLI)])
    assert await guard.admit(caller(project="other")) is NO_HOLD
    hold = await guard.admit(caller())
    key = ("project", "web", "monthly", guard.periods(0).monthly.id)
    # One request and one row, estimated: $0.001 + $0.000002.
    assert (await ledger.read([key]))[key].reserved == MILLI + 2000
    hold.release(200, Units(rows=5))  # settled at the loader's price of what was metered
    await asyncio.sleep(0.05)  # a Redis settle runs in the background
    state = (await ledger.read([key]))[key]
    assert (state.spent, state.reserved) == (MILLI + 10_000, 0)
    # Refused by a later guard (nothing metered): the reservation goes back, nothing spent.
    hold = await guard.admit(caller())
    hold.release(429, None)
    await asyncio.sleep(0.05)
    state = (await ledger.read([key]))[key]
    assert (state.spent, state.reserved) == (MILLI + 10_000, 0)


async def test_exhausted_budget_names_itself_its_spend_and_its_reset(ledger: BudgetLedger) -> None:
    guard = BudgetGuard(ledger, book())
    guard.publish([Budget("customer", "acme", daily=2 * MILLI, monthly=100 * MILLI)])
    holds = [await guard.admit(caller(customer="acme")) for _ in range(2)]
    with pytest.raises(BudgetExhausted) as refused:
        await guard.admit(caller(customer="acme"))
    error = refused.value
    assert error.status == 429 and error.code == "budget_exhausted"
    budget = error.details["budget"]
    day = current_period("daily", __import__("time").time())
    assert budget == {
        "scope": "customer",
        "name": "acme",
        "period": "daily",
        "period_id": day.id,
        "cap_usd": "0.002000000",
        "spent_usd": "0.000000000",
        "reserved_usd": "0.002000000",
        "estimate_usd": "0.001000000",
        "resets_at": day.resets_at,
    }
    assert "daily budget of customer 'acme'" in error.message
    assert f"resets at {day.resets_at}" in error.message
    retry = int(dict(error.headers)[b"retry-after"])
    assert 0 < retry <= 86400
    for hold in holds:
        hold.release(200, Units())
    await asyncio.sleep(0.05)
    with pytest.raises(BudgetExhausted, match=r"0.002000000 spent"):
        await guard.admit(caller(customer="acme"))


async def test_an_llm_call_reserves_its_prompt_and_max_tokens() -> None:
    ledger = MemoryLedger()
    prices = book(per_1k_input_tokens="1", per_1k_output_tokens="2")
    guard = BudgetGuard(ledger, prices, default_output_tokens=100)
    guard.publish([Budget("key", "key_a", monthly=USD)])
    await guard.admit(caller(task="chat", input_estimate=10, max_output=50))
    await guard.admit(caller(task="chat", input_estimate=10))  # the default allowance
    key = ("key", "key_a", "monthly", guard.periods(0).monthly.id)
    expected = (10 * MILLI + 50 * 2 * MILLI) + (10 * MILLI + 100 * 2 * MILLI)
    assert (await ledger.read([key]))[key].reserved == expected
    # max_tokens larger than what is left: refused, saying why.
    guard.publish([Budget("key", "key_a", monthly=expected + 1000)])
    with pytest.raises(BudgetExhausted, match="lower max_tokens"):
        await guard.admit(caller(task="chat", max_output=10_000))


async def test_admission_gives_the_reservation_back_when_a_later_guard_refuses() -> None:
    class Refuses:
        async def admit(self, _: Caller) -> object:
            from modelport.core.errors import TooManyRequests

            raise TooManyRequests("no")

    ledger = MemoryLedger()
    guard = BudgetGuard(ledger, book())
    guard.publish([Budget("endpoint", "bc", monthly=MILLI)])
    admission = Admission([guard, Refuses()])  # type: ignore[list-item]
    for _ in range(3):
        with pytest.raises(Exception, match="no"):
            await admission.admit(caller())
    key = ("endpoint", "bc", "monthly", guard.periods(0).monthly.id)
    assert (await ledger.read([key]))[key].reserved == 0


async def test_redis_down_admits_uncounted_or_refuses_as_configured() -> None:
    from modelport.core.errors import Unavailable
    from tests.redis_server import free_port

    dead = RedisLedger(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1)
    try:
        guard = BudgetGuard(dead, book())
        guard.publish([Budget("project", "web", monthly=MILLI)])
        assert await guard.admit(caller()) is NO_HOLD
        guard.fail_open = False
        with pytest.raises(Unavailable, match="budgets cannot be checked"):
            await guard.admit(caller())
    finally:
        await dead.aclose()


def test_the_integer_cost_is_the_exact_fraction_rounded_once() -> None:
    import random

    from modelport.core.usage import UsageRecord
    from modelport.observability.pricing import UNIT_PRICES, parse_usd

    rng = random.Random(7)
    for _ in range(2000):
        prices = {
            unit: parse_usd(f"{rng.randint(0, 10**6)}e-{rng.randint(0, 9)}")
            for unit in UNIT_PRICES
            if rng.random() < 0.6
        }
        prices.pop("per_audio_minute", None)
        catalog = PriceBook([Price("endpoint", "bc", u, v, 0.0) for u, v in prices.items()])
        units = Units(
            requests=1,
            input_tokens=rng.randint(0, 10**6),
            output_tokens=rng.randint(0, 10**5),
            images=rng.randint(0, 50),
            rows=rng.randint(0, 10**4),
        )
        one = UsageRecord("r", "bc", "r1", "k", "p", "", 200, 1.0, units, at=1.0, model="bc")
        assert catalog.cost_of(one) == PriceBook.exact_cost(
            catalog.unit_prices("bc", "bc:0", 1.0), units
        )


async def test_settling_frees_what_the_call_did_not_use() -> None:
    ledger = MemoryLedger()
    guard = BudgetGuard(ledger, book(per_1k_output_tokens="1"))
    guard.publish([Budget("team", "red", daily=100 * MILLI)])
    key = ("team", "red", "daily", guard.periods(0).daily.id)
    hold = await guard.admit(caller(task="chat", max_output=80))
    assert (await ledger.read([key]))[key].reserved == 80 * MILLI
    with pytest.raises(BudgetExhausted):  # 80 of 100 held: a second such call does not fit
        await guard.admit(caller(task="chat", max_output=80))
    hold.release(200, Units(input_tokens=10, output_tokens=5))  # it stopped after 5 tokens
    state = (await ledger.read([key]))[key]
    assert (state.spent, state.reserved) == (5 * MILLI, 0)
    await guard.admit(caller(task="chat", max_output=80))  # now it fits
