"""Budgets in the control plane: stored caps, the snapshot the gateway's guard enforces,
seeding what was spent, and the 80% / 100% notices.

Caps come from ``/api/v1/budgets`` (any kind) and from intents (``budget.monthly_usd``: the
endpoint's monthly cap); where both cap one endpoint's month, the tighter applies.

``BudgetService`` runs on the event loop and never queries the database there (reads run in
threads). Every ``interval_s`` it:

- creates the ledger lines of the current day and month of every capped scope, and seeds
  each new line once with what its scope spent in the period before the line existed
  (``budget_seed.py``: rollups, raw events, and journaled events not loaded yet). At start
  this runs before the gateway serves, so spent survives restarts; at each period boundary
  the new lines start from what the new period holds (normally nothing);
- notifies through the alert webhooks when a cap's spend crosses 80% and 100%: one episode
  per threshold per period (its key names both), so a restart never sends one again; the
  episodes of a period are resolved when it is over;
- every few seconds, reloads the caps and publishes them (the API and ``apply`` refresh at
  once; this catches the rest: an endpoint deleted, a change made through another server
  sharing the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import endpoints as endpoint_service
from modelport.control import identity as identity_service
from modelport.control import keys as key_service
from modelport.control.budget_seed import spent_before
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.usage import UsageRecord
from modelport.governance.budget_ledger import BudgetLedger, LineKey
from modelport.governance.budgets import (
    KINDS,
    PERIODS,
    Budget,
    BudgetGuard,
    current_period,
)
from modelport.observability.alerts import Alerts
from modelport.observability.pricing import format_usd, parse_usd
from modelport.store import Database
from modelport.store.budget_tables import BudgetRow

__all__ = ["BudgetService", "delete_budget", "load_budgets", "parse_cap", "set_budget"]

log = logging.getLogger("modelport.budgets")

_THRESHOLDS = (80, 100)
_RELOAD_S = 5.0  # caps from intents: how soon an applied intent's budget is enforced
_MAX_NAME = 128
_FIELDS = ("daily_usd", "monthly_usd")


def parse_cap(value: Any, field: str) -> int | None:
    """A cap in nano-USD from a JSON number or decimal string (None: not capped);
    ``InvalidRequest`` naming ``field`` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(
            f"{field} must be a number of USD (or null for no cap), got {type(value).__name__}",
            param=field,
            field=field,
        )
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite amount of USD, got {text}")
        Decimal(text)
        return parse_usd(text)
    except (ValueError, InvalidOperation) as exc:
        raise InvalidRequest(f"{field} {exc}", param=field, field=field) from None


def _check_scope(session: Session, kind: str, name: str) -> None:
    if kind not in KINDS:
        raise InvalidRequest(
            f"unknown budget kind '{kind[:40]}': use one of {', '.join(KINDS)}",
            param="kind",
            field="kind",
        )
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise InvalidRequest(
            f"a {kind} name must be 1-{_MAX_NAME} printable characters", param="name", field="name"
        )
    try:
        if kind == "key":
            key_service.get_key(session, name)
        elif kind == "project":
            identity_service.project_team(session, name)
        elif kind == "team":
            identity_service.get_team(session, name)
        elif kind == "endpoint":
            endpoint_service.get_endpoint(session, name)
    except NotFound as exc:
        raise NotFound(exc.message, param="name", field="name") from None


def _public_caps(row: BudgetRow | None) -> dict[str, str | None] | None:
    if row is None:
        return None
    return {
        "daily_usd": None if row.daily_nanousd is None else format_usd(row.daily_nanousd),
        "monthly_usd": None if row.monthly_nanousd is None else format_usd(row.monthly_nanousd),
    }


def set_budget(
    session: Session, *, kind: str, name: str, caps: Mapping[str, Any], actor: str
) -> tuple[Any, Any]:
    """Set (replace) a scope's caps: ``daily_usd`` and ``monthly_usd``, a field left out or
    null leaving that period uncapped (as ``PUT /limits`` replaces limits). Every check runs
    before anything is stored. Returns the caps before and after (for the audit log)."""
    unknown = sorted(set(caps) - set(_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown field '{unknown[0][:40]}': give daily_usd and/or monthly_usd",
            param=unknown[0],
            field=unknown[0],
        )
    daily = parse_cap(caps.get("daily_usd"), "daily_usd")
    monthly = parse_cap(caps.get("monthly_usd"), "monthly_usd")
    if daily is None and monthly is None:
        raise InvalidRequest(
            "give daily_usd and/or monthly_usd (to remove a budget, DELETE it)",
            param="monthly_usd",
            field="monthly_usd",
        )
    _check_scope(session, kind, name)
    row = session.scalar(select(BudgetRow).where(BudgetRow.kind == kind, BudgetRow.name == name))
    before = _public_caps(row)
    if row is None:
        row = BudgetRow(kind=kind, name=name)
        session.add(row)
    row.daily_nanousd = daily
    row.monthly_nanousd = monthly
    row.updated_by = actor[:140]
    row.updated_at = datetime.now(UTC)
    session.flush()
    return before, _public_caps(row)


def delete_budget(session: Session, *, kind: str, name: str) -> Any:
    """Remove a scope's caps; 404 naming ``name`` if it has none. Returns them."""
    if kind not in KINDS:
        _check_scope(session, kind, name)
    row = session.scalar(select(BudgetRow).where(BudgetRow.kind == kind, BudgetRow.name == name))
    if row is None:
        raise NotFound(f"{kind} '{name}' has no budget", param="name", field="name")
    before = _public_caps(row)
    session.delete(row)
    return before


@dataclass(frozen=True, slots=True)
class _Loaded:
    budgets: list[Budget]
    sources: dict[tuple[str, str], str]


def load_budgets(session: Session) -> _Loaded:
    """Every cap: the stored ones and the intents' endpoint monthly caps (tighter wins)."""
    caps: dict[tuple[str, str], Budget] = {}
    sources: dict[tuple[str, str], str] = {}
    for row in session.scalars(select(BudgetRow).order_by(BudgetRow.kind, BudgetRow.name)):
        caps[(row.kind, row.name)] = Budget(
            row.kind, row.name, row.daily_nanousd, row.monthly_nanousd
        )
        sources[(row.kind, row.name)] = "api"
    for endpoint in endpoint_service.list_endpoints(session):
        monthly = _intent_monthly(endpoint.intent)
        if monthly is None:
            continue
        scope = ("endpoint", endpoint.name)
        known = caps.get(scope)
        if known is None:
            caps[scope] = Budget("endpoint", endpoint.name, None, monthly)
            sources[scope] = "intent"
        elif known.monthly is None or monthly < known.monthly:
            caps[scope] = Budget("endpoint", endpoint.name, known.daily, monthly)
            sources[scope] = "api+intent"
    return _Loaded(list(caps.values()), sources)


def _intent_monthly(document: dict[str, Any] | None) -> int | None:
    if not document:
        return None
    budget = document.get("budget") or {}
    value = budget.get("monthly_usd") if isinstance(budget, dict) else None
    if value is None:
        return None
    try:
        # Validated when applied; a float there is taken at its shortest decimal, to 1 nano-USD.
        exact = Decimal(repr(float(value))).quantize(Decimal("0.000000001"))
        return parse_usd(str(exact))
    except (ValueError, InvalidOperation):
        log.warning("ignoring an endpoint budget that is not an amount: %r", value)
        return None


class BudgetService:
    """Keeps the gateway's budget guard, its ledger and the budget notices up to date."""

    def __init__(
        self,
        db: Database,
        guard: BudgetGuard,
        *,
        alerts: Alerts | None = None,
        journal: Path | None = None,
        cost_of: Callable[[UsageRecord], int] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.db = db
        self.guard = guard
        self.ledger: BudgetLedger = guard.ledger
        self.alerts = alerts
        self.journal = journal
        self.cost_of = cost_of or (lambda _record: 0)
        self.interval_s = interval_s
        self.sources: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None
        self._ids: tuple[str, str] | None = None  # the day and month last seen
        self._reloaded = 0.0

    async def start(self) -> None:
        """Load the caps, create and seed their lines, publish them; then keep at it."""
        await self.refresh()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.ledger.aclose()

    async def refresh(self) -> None:
        """Reload the caps from the database; lines seeded before they are enforced."""
        loaded = await asyncio.to_thread(self._load)
        await self._sync(loaded.budgets)
        self.sources = loaded.sources
        self.guard.publish(loaded.budgets)
        self._reloaded = time.monotonic()

    def _load(self) -> _Loaded:
        with self.db.session() as session:
            return load_budgets(session)

    def _lines(self, budgets: list[Budget], now: float) -> list[tuple[LineKey, Budget, int]]:
        periods = {name: current_period(name, now) for name in PERIODS}
        lines = []
        for budget in budgets:
            for name in PERIODS:
                cap = budget.cap(name)
                if cap is not None:
                    key = (budget.kind, budget.name, name, periods[name].id)
                    lines.append((key, budget, cap))
        return lines

    async def _sync(self, budgets: list[Budget]) -> None:
        """Create the current lines of ``budgets``; seed each new one once."""
        now = time.time()
        keys = [key for key, _, _ in self._lines(budgets, now)]
        if not keys:
            return
        states = await self.ledger.track(keys, int(now * 1_000_000))
        groups: dict[int, list[LineKey]] = {}
        for key, state in states.items():
            if not state.seeded:
                groups.setdefault(state.since, []).append(key)
        for since, group in groups.items():
            scopes = {(key[0], key[1]) for key in group}
            spent = await asyncio.to_thread(
                spent_before, self.db, self.journal, self.cost_of, scopes, since
            )
            for key in group:
                await self.ledger.seed(key, since, spent.get((key[0], key[1], key[2]), 0))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:  # the next tick retries; budgets keep being enforced meanwhile
                log.exception("budget upkeep failed; retrying")

    async def tick(self) -> None:
        """One round of upkeep (see the module's docstring)."""
        now = time.time()
        ids = (current_period("daily", now).id, current_period("monthly", now).id)
        if ids != self._ids:
            self._ids = ids
            self.ledger.prune(set(ids))
            await self._resolve_ended(ids)
        if time.monotonic() - self._reloaded >= _RELOAD_S:
            await self.refresh()
        else:
            await self._sync(list(self.guard.budgets.values()))
        await self._notify(now)

    async def _resolve_ended(self, ids: tuple[str, str]) -> None:
        if self.alerts is None:
            return
        for key in await self.alerts.open_keys():
            parts = key.split(":", 5)
            if len(parts) == 6 and parts[0] == "budget" and parts[3] not in ids:
                await self.alerts.close(key)

    async def _notify(self, now: float) -> None:
        if self.alerts is None:
            return
        lines = self._lines(list(self.guard.budgets.values()), now)
        states = await self.ledger.read([key for key, _, _ in lines])
        for key, budget, cap in lines:
            spent = states[key].spent
            for threshold in _THRESHOLDS:
                if cap > 0 and spent * 100 >= cap * threshold:
                    await self._open(key, budget, cap, spent, threshold, now)

    async def _open(
        self, key: LineKey, budget: Budget, cap: int, spent: int, threshold: int, now: float
    ) -> None:
        assert self.alerts is not None
        kind, name, period_name, period_id = key
        period = current_period(period_name, now)
        episode = f"budget:{kind}:{period_name}:{period_id}:{threshold}:{name}"
        summary = (
            f"the {period_name} budget of {kind} '{name}' is {threshold}% spent: "
            f"{format_usd(spent)} of {format_usd(cap)} USD; it resets at {period.resets_at}"
        )
        data = {
            "scope": kind,
            "name": name,
            "period": period_name,
            "period_id": period_id,
            "threshold_percent": threshold,
            "cap_usd": format_usd(cap),
            "spent_usd": format_usd(spent),
            "resets_at": period.resets_at,
        }
        endpoint = name if kind == "endpoint" else ""
        await self.alerts.open(episode, "budget", endpoint, summary, data)

    async def status(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every budget with, per capped period, its cap, spent, reserved, remaining, reset."""
        now = time.time()
        budgets = [b for b in self.guard.budgets.values() if kind is None or b.kind == kind]
        budgets.sort(key=lambda b: (KINDS.index(b.kind), b.name))
        lines = self._lines(budgets, now)
        states = await self.ledger.read([key for key, _, _ in lines])
        periods: dict[tuple[str, str], dict[str, Any]] = {}
        for key, _, cap in lines:
            state = states[key]
            period = current_period(key[2], now)
            periods.setdefault((key[0], key[1]), {})[key[2]] = {
                "period_id": period.id,
                "cap_usd": format_usd(cap),
                "spent_usd": format_usd(state.spent),
                "reserved_usd": format_usd(state.reserved),
                "remaining_usd": format_usd(max(0, cap - state.spent - state.reserved)),
                "resets_at": period.resets_at,
            }
        return [
            {
                "kind": b.kind,
                "name": b.name,
                "source": self.sources.get((b.kind, b.name), "api"),
                "daily": periods.get((b.kind, b.name), {}).get("daily"),
                "monthly": periods.get((b.kind, b.name), {}).get("monthly"),
            }
            for b in budgets
        ]
