"""Budgets: daily and monthly caps in money per key, project, team, customer and endpoint.

Admission *reserves* a call's estimated cost on the ledger line of every cap that applies
to its caller (``budget_ledger.py``), and the call goes on only if each stays within its
cap; when the call is metered, its hold *settles*: the reservation is given back and the
real cost, priced from the metered units with the same price book and the same rules the
usage loader stores it with, is added to what was spent. Reservations count against the
cap, so concurrent calls cannot overshoot it together.

The estimate (a call's reservation):

- chat and completion: the prompt estimated from the body (``Caller.input_estimate``) plus
  ``max_tokens`` (or ``max_completion_tokens``), or the default output allowance when the
  call sets none (``MODELPORT_BUDGET_DEFAULT_OUTPUT_TOKENS``);
- embedding: the estimated prompt;
- tabular and vision: one row or one image, asr: no audio (the body is not parsed on the hot
  path to count them): the per-request price and a lower bound of the rest.

A call that costs more than its estimate (more rows than one, a longer prompt) is charged in
full when it settles: a cap can then be passed by what the calls in flight were
under-estimated by, never by more. Prices per request, per output token (bounded by
``max_tokens``) and per row of one-row calls are reserved exactly.

An exhausted budget answers ``BudgetExhausted`` (429, code ``budget_exhausted``) naming the
budget (scope, name, period, cap, spent, reserved) and when it resets, with ``Retry-After``
until then. Periods are UTC days and UTC calendar months.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

from modelport.core.errors import TooManyRequests, Unavailable
from modelport.core.usage import Units
from modelport.governance.admission import NO_HOLD, Caller, Hold
from modelport.governance.budget_ledger import BudgetLedger, LineKey, MemoryLedger

__all__ = [
    "KINDS",
    "PERIODS",
    "Budget",
    "BudgetExhausted",
    "BudgetGuard",
    "Period",
    "Prices",
    "current_period",
    "format_usd",
]

log = logging.getLogger("modelport.budgets")

#: The scopes a budget caps, in the order a caller's are checked.
KINDS = ("key", "project", "team", "customer", "endpoint")
PERIODS = ("daily", "monthly")
_NANO = 1_000_000_000
_LLM_TASKS = frozenset({"chat", "completion"})


def format_usd(nano: int) -> str:
    """``1500000000`` -> ``"1.500000000"`` (as ``observability.pricing`` writes money)."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), _NANO)
    return f"{sign}{whole}.{frac:09d}"


class Prices(Protocol):
    """What budgets price with: ``observability.pricing.PriceBook`` (the same book the usage
    loader prices stored events with), given by the control plane."""

    def cost(self, endpoint: str, model_version: str, units: Units, at: float) -> int: ...


@dataclass(frozen=True, slots=True)
class Budget:
    """One scope's caps in nano-USD (None: that period is not capped)."""

    kind: str
    name: str
    daily: int | None = None
    monthly: int | None = None

    def cap(self, period: str) -> int | None:
        return self.daily if period == "daily" else self.monthly


@dataclass(frozen=True, slots=True)
class Period:
    """One UTC day or month: its id (``2026-11-30``, ``2026-11``) and its bounds."""

    name: str
    id: str
    start: float
    end: float  # when the next one starts: when the budget resets

    @property
    def resets_at(self) -> str:
        return datetime.fromtimestamp(self.end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_period(name: str, now: float) -> Period:
    """The day or month (UTC) holding unix time ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    if name == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return Period(name, start.date().isoformat(), start.timestamp(), start.timestamp() + 86400)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Period(name, start.strftime("%Y-%m"), start.timestamp(), end.timestamp())


class BudgetExhausted(TooManyRequests):
    """A budget refused the call: what it is, what was spent, and when it resets."""

    code = "budget_exhausted"


class _Periods:
    """The current day and month, worked out again only when one ends (not per call)."""

    __slots__ = ("daily", "monthly")

    def __init__(self, now: float) -> None:
        self.daily = current_period("daily", now)
        self.monthly = current_period("monthly", now)

    def at(self, now: float) -> _Periods:
        if now < self.daily.end:
            return self
        return _Periods(now)

    def get(self, name: str) -> Period:
        return self.daily if name == "daily" else self.monthly


class BudgetGuard:
    """The admission guard of budgets (``governance.admission.Guard``).

    The caps arrive as an immutable snapshot from the control plane (:meth:`publish`);
    prices are the control plane's in-memory price book; nothing here queries a database."""

    def __init__(
        self,
        ledger: BudgetLedger | None = None,
        prices: Prices | None = None,
        *,
        default_output_tokens: int = 1024,
        fail_open: bool = True,
    ) -> None:
        self.ledger: BudgetLedger = ledger if ledger is not None else MemoryLedger()
        self.prices = prices
        self.default_output_tokens = default_output_tokens
        self.fail_open = fail_open
        self._outage_logged = 0.0
        self.budgets: Mapping[tuple[str, str], Budget] = MappingProxyType({})
        # Told after every publish (the server re-arms the gateway's admission with it).
        self.on_publish: Callable[[], None] | None = None
        self._periods = _Periods(time.time())
        # A memory ledger is reserved on without a coroutine: the hot path stays one call.
        self._memory = self.ledger if isinstance(self.ledger, MemoryLedger) else None
        self._settling: set[asyncio.Task[None]] = set()  # a Redis ledger's settles in flight

    def publish(self, budgets: Iterable[Budget]) -> None:
        """Swap in the caps (one reference store: a call sees the old or the new ones)."""
        self.budgets = MappingProxyType({(b.kind, b.name): b for b in budgets})
        if self.on_publish is not None:
            self.on_publish()

    @property
    def configured(self) -> bool:
        """Whether any budget is set: without one the gateway leaves this guard out."""
        return bool(self.budgets)

    def periods(self, now: float) -> _Periods:
        periods = self._periods = self._periods.at(now)
        return periods

    def applying(self, caller: Caller) -> list[Budget]:
        """The budgets that cap this caller, in the order of ``KINDS``."""
        budgets = self.budgets
        found = []
        for kind, name in (
            ("key", caller.key_id),
            ("project", caller.project),
            ("team", caller.team),
            ("customer", caller.customer),
            ("endpoint", caller.endpoint),
        ):
            if name:
                budget = budgets.get((kind, name))
                if budget is not None:
                    found.append(budget)
        return found

    def estimate(self, caller: Caller, now: float) -> int:
        """The call's reservation in nano-USD: its estimated units at today's prices."""
        if self.prices is None:
            return 0
        units = Units()
        task = caller.task
        if task in _LLM_TASKS:
            units.input_tokens = caller.input_estimate
            units.output_tokens = (
                caller.max_output if caller.max_output is not None else self.default_output_tokens
            )
        elif task == "embedding":
            units.input_tokens = caller.input_estimate
        elif task == "tabular":
            units.rows = 1
        elif task == "vision":
            units.images = 1
        return self.prices.cost(caller.endpoint, f"{caller.model}:{caller.version}", units, now)

    async def admit(self, caller: Caller) -> Hold:
        if not self.budgets:
            return NO_HOLD
        budgets = self.applying(caller)
        if not budgets:
            return NO_HOLD
        now = time.time()
        periods = self.periods(now)
        keys: list[LineKey] = []
        caps: list[int] = []
        capped: list[tuple[Budget, Period]] = []
        for budget in budgets:
            for name in PERIODS:
                cap = budget.cap(name)
                if cap is not None:
                    period = periods.get(name)
                    keys.append((budget.kind, budget.name, name, period.id))
                    caps.append(cap)
                    capped.append((budget, period))
        if not keys:
            return NO_HOLD
        amount = self.estimate(caller, now)
        now_us = int(now * 1_000_000)
        memory = self._memory
        if memory is not None:
            refusal = memory.reserve_now(keys, caps, amount, now_us)
        else:
            try:
                refusal = await self.ledger.reserve(keys, caps, amount, now_us)
            except Exception as exc:  # the shared ledger is unreachable
                return self._outage(exc, now)
        if refusal is not None:
            budget, period = capped[refusal.index]
            raise _exhausted(
                budget, period, caps[refusal.index], refusal.spent, refusal.reserved, amount, now
            )
        return _BudgetHold(self, caller, keys, amount)

    def _outage(self, exc: Exception, now: float) -> Hold:
        """The shared ledger failed: admit uncounted (``fail_open``) or refuse with 503."""
        if now - self._outage_logged > 10:  # once in a while, not per call
            self._outage_logged = now
            log.error(
                "budget ledger unreachable (%r): calls are %s",
                exc,
                "admitted uncounted" if self.fail_open else "refused",
            )
        if self.fail_open:
            return NO_HOLD
        raise Unavailable(
            "budgets cannot be checked right now (their shared store is unreachable): retry shortly"
        )

    def settle(self, caller: Caller, keys: list[LineKey], amount: int, units: Units | None) -> None:
        """Give back a call's reservation; add its real cost to the lines of now's periods."""
        now = time.time()
        cost = 0
        if units is not None and self.prices is not None:
            try:
                version = f"{caller.model}:{caller.version}"
                cost = self.prices.cost(caller.endpoint, version, units, now)
            except Exception:  # pricing must never take the gateway down; the loader logs too
                log.exception("could not price a call to %s for its budget", caller.endpoint)
        periods = self.periods(now)
        spent = [
            key if key[3] == periods.get(key[2]).id else (*key[:3], periods.get(key[2]).id)
            for key in keys
        ]
        now_us = int(now * 1_000_000)
        memory = self._memory
        if memory is not None:
            memory.settle_now(keys, amount, spent, cost, now_us)
            return
        task = asyncio.get_running_loop().create_task(
            self.ledger.settle(keys, amount, spent, cost, now_us)
        )
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a budget settle failed: %s", task.exception())


def _exhausted(
    budget: Budget, period: Period, cap: int, spent: int, reserved: int, amount: int, now: float
) -> BudgetExhausted:
    remaining = cap - spent - reserved
    why = (
        "it is used up"
        if remaining <= 0
        else f"this call's estimated cost, {format_usd(amount)} USD, is more than the "
        f"{format_usd(remaining)} USD left (lower max_tokens, or wait for calls in flight)"
    )
    retry = max(1, math.ceil(period.end - now))
    return BudgetExhausted(
        f"budget exhausted: the {period.name} budget of {budget.kind} '{budget.name}' "
        f"({format_usd(cap)} USD; {format_usd(spent)} spent, {format_usd(reserved)} reserved "
        f"by calls in flight) refuses this call: {why}. It resets at {period.resets_at}",
        headers=((b"retry-after", str(retry).encode()),),
        budget={
            "scope": budget.kind,
            "name": budget.name,
            "period": period.name,
            "period_id": period.id,
            "cap_usd": format_usd(cap),
            "spent_usd": format_usd(spent),
            "reserved_usd": format_usd(reserved),
            "estimate_usd": format_usd(amount),
            "resets_at": period.resets_at,
        },
    )


class _BudgetHold:
    """One admitted call's reservation, settled once when it is metered."""

    __slots__ = ("_amount", "_caller", "_guard", "_keys", "headers")

    def __init__(
        self, guard: BudgetGuard, caller: Caller, keys: list[LineKey], amount: int
    ) -> None:
        self._guard = guard
        self._caller = caller
        self._keys = keys
        self._amount = amount
        self.headers: list[tuple[bytes, bytes]] = []

    def delivered(self, tokens: int) -> None:
        pass  # a budget settles the whole cost once, from the metered units

    def release(self, status: int, units: Units | None) -> None:
        self._guard.settle(self._caller, self._keys, self._amount, units)
