"""Budget ledgers: how much each capped scope spent and holds reserved, per period.

A *line* is one scope's count for one period: ``(kind, name, period, period_id)``, e.g.
``("project", "web", "monthly", "2026-11")``. Each line holds

- ``spent``: the settled cost of calls metered since the line was created, plus its *seed*;
- ``reserved``: the estimated cost of admitted calls not metered yet;
- ``since``: when the line was created (unix microseconds). Every call metered from then on
  is counted by the ledger as it settles; the control plane *seeds* the line once with the
  stored and journaled cost of the period's calls metered before ``since``
  (``control/budgets.py``), so nothing is counted twice or lost across a restart;
- ``seeded``: whether that seed was added.

:meth:`BudgetLedger.reserve` is the one atomic step admission rests on: it adds a call's
estimated cost to the ``reserved`` of every line, only if each line then stays within its
cap; otherwise it changes nothing and says which line refused. So concurrent calls can never
together hold more than a cap, whatever order they arrive in.

Two ledgers: :class:`MemoryLedger` for one gateway (one event loop: every method runs to its
end without awaiting, so no lock is needed), and ``RedisLedger`` (``budget_redis.py``) for
several gateways sharing their counts, with Lua scripts doing the same steps atomically.

Money is integer nano-USD, as everywhere (``observability/pricing.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BudgetLedger", "LineKey", "LineState", "MemoryLedger", "Refusal", "fits"]

#: ``(kind, name, period, period_id)``.
LineKey = tuple[str, str, str, str]


@dataclass(slots=True)
class LineState:
    """One line's counts."""

    spent: int = 0
    reserved: int = 0
    since: int = 0  # unix microseconds
    seeded: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which line refused a reservation (its index in the request) and its counts then."""

    index: int
    spent: int
    reserved: int


def fits(cap: int, spent: int, reserved: int, amount: int) -> bool:
    """Whether ``amount`` more may be reserved under ``cap``: something must remain, and the
    amount must fit in it. An exhausted cap (nothing remains, a cap of 0 included) refuses
    even a call estimated to cost nothing."""
    remaining = cap - spent - reserved
    return remaining > 0 and amount <= remaining


class BudgetLedger(Protocol):
    """Where budget lines are counted. Every method is atomic over the lines it is given."""

    async def reserve(
        self, keys: Sequence[LineKey], caps: Sequence[int], amount: int, now_us: int
    ) -> Refusal | None:
        """Reserve ``amount`` on every line if each stays within its cap; else nothing."""
        ...

    async def settle(
        self,
        reserved: Sequence[LineKey],
        amount: int,
        spent: Sequence[LineKey],
        cost: int,
        now_us: int,
    ) -> None:
        """Give back ``amount`` reserved on ``reserved``; add ``cost`` to ``spent`` (the lines
        of the period the call was metered in, created if need be)."""
        ...

    async def track(self, keys: Sequence[LineKey], now_us: int) -> dict[LineKey, LineState]:
        """Create the lines that do not exist yet (``since`` = now); every line's state."""
        ...

    async def seed(self, key: LineKey, since: int, amount: int) -> bool:
        """Add ``amount`` to the line's ``spent`` once, if it is still the line created at
        ``since`` and was not seeded yet; whether it was added."""
        ...

    async def read(self, keys: Sequence[LineKey]) -> dict[LineKey, LineState]:
        """The lines' counts (a line that does not exist reads as zeros, ``since`` 0)."""
        ...

    def prune(self, current: set[str]) -> None:
        """Forget lines of periods not in ``current`` with nothing reserved (memory only;
        Redis keys expire by themselves)."""
        ...

    async def aclose(self) -> None: ...


class MemoryLedger:
    """Lines in a dict, for one gateway: on one event loop, each method is atomic."""

    def __init__(self) -> None:
        self._lines: dict[LineKey, LineState] = {}

    def _line(self, key: LineKey, now_us: int) -> LineState:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = LineState(since=now_us)
        return line

    async def reserve(
        self, keys: Sequence[LineKey], caps: Sequence[int], amount: int, now_us: int
    ) -> Refusal | None:
        return self.reserve_now(keys, caps, amount, now_us)

    def reserve_now(
        self, keys: Sequence[LineKey], caps: Sequence[int], amount: int, now_us: int
    ) -> Refusal | None:
        """:meth:`reserve` without the coroutine: what the guard calls on the hot path."""
        lines = [self._line(key, now_us) for key in keys]
        for index, (line, cap) in enumerate(zip(lines, caps, strict=True)):
            if not fits(cap, line.spent, line.reserved, amount):
                return Refusal(index, line.spent, line.reserved)
        for line in lines:
            line.reserved += amount
        return None

    async def settle(
        self,
        reserved: Sequence[LineKey],
        amount: int,
        spent: Sequence[LineKey],
        cost: int,
        now_us: int,
    ) -> None:
        self.settle_now(reserved, amount, spent, cost, now_us)

    def settle_now(
        self,
        reserved: Sequence[LineKey],
        amount: int,
        spent: Sequence[LineKey],
        cost: int,
        now_us: int,
    ) -> None:
        """:meth:`settle` without the coroutine (a hold's ``release`` is not async)."""
        for key in reserved:
            line = self._lines.get(key)
            if line is not None:
                line.reserved = max(0, line.reserved - amount)
        for key in spent:
            self._line(key, now_us).spent += cost

    async def track(self, keys: Sequence[LineKey], now_us: int) -> dict[LineKey, LineState]:
        return {key: _copy(self._line(key, now_us)) for key in keys}

    async def seed(self, key: LineKey, since: int, amount: int) -> bool:
        line = self._lines.get(key)
        if line is None or line.since != since or line.seeded:
            return False
        line.spent += amount
        line.seeded = True
        return True

    async def read(self, keys: Sequence[LineKey]) -> dict[LineKey, LineState]:
        return {key: _copy(self._lines.get(key) or LineState()) for key in keys}

    def prune(self, current: set[str]) -> None:
        for key in [k for k, line in self._lines.items() if k[3] not in current]:
            if self._lines[key].reserved == 0:
                del self._lines[key]

    async def aclose(self) -> None:
        self._lines.clear()


def _copy(line: LineState) -> LineState:
    return LineState(line.spent, line.reserved, line.since, line.seeded)
