"""Endpoints' SLOs, evaluated from the usage rollups; the ``SloBook`` that keeps them current.

An endpoint's SLO comes from the ``slo`` section of the intent it was applied from. Its
counts over a window are read from the rollups without scanning raw events: whole days from
day rollups, whole hours from hour rollups, and minute rollups at the two edges, so every
window is exact to the minute (the minute it starts in is counted whole).

``SloBook`` re-evaluates every endpoint every few seconds in a thread, keeps the result for
``snapshot()`` (the metrics read it), opens SLO alerts as their rules fire and closes them
once clear for ``resolve_after_s`` (at once when the SLO itself is gone), and answers
``latency_target_ms(endpoint)`` from memory for the usage loader, which counts an event as
slow when it took longer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelport.control import endpoints as endpoint_service
from modelport.core.intent import Intent
from modelport.observability.alerts import Alerts
from modelport.observability.slo import BURN_WINDOWS, Counts, SloSpec, SloStatus, evaluate
from modelport.store import Database
from modelport.store.tables import EndpointRow, UsageRollupRow

__all__ = [
    "ALERT_PREFIX",
    "SloBook",
    "endpoint_slo",
    "spans",
    "spec_of",
    "status_dict",
    "window_counts",
]

log = logging.getLogger("modelport.slo")

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
#: Prefix of the alert keys the SLO book owns (DRIFT and others use their own).
ALERT_PREFIX = "slo:"


def spec_of(row: EndpointRow) -> SloSpec | None:
    """The SLO of the intent the endpoint was applied from; ``None`` when it states none."""
    if row.intent is None:
        return None
    try:
        slo = Intent.model_validate(row.intent).slo
    except ValidationError:  # stored by an older Modelport and no longer valid: no SLO
        log.warning("endpoint %s: stored intent no longer validates; no SLO", row.name)
        return None
    return SloSpec.of(
        availability=slo.availability, p95_latency_ms=slo.p95_latency_ms, window_s=slo.window_s
    )


def _floor(at: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((at - epoch) // step) * step


def _ceil(at: datetime, step: timedelta) -> datetime:
    floor = _floor(at, step)
    return floor if floor == at else floor + step


def spans(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """``(granularity, from, to)`` bucket ranges whose rollups together cover
    ``[start, end)``: the coarsest buckets that fit, minutes at the edges."""
    start = _floor(start, _MINUTE)
    if start >= end:
        return []
    first_hour, last_hour = _ceil(start, _HOUR), _floor(end, _HOUR)
    if first_hour >= last_hour:
        return [("minute", start, end)]
    out = [("minute", start, first_hour), ("minute", last_hour, end)]
    first_day, last_day = _ceil(first_hour, _DAY), _floor(last_hour, _DAY)
    if first_day >= last_day:
        out.append(("hour", first_hour, last_hour))
    else:
        out += [
            ("hour", first_hour, first_day),
            ("day", first_day, last_day),
            ("hour", last_day, last_hour),
        ]
    return [(granularity, lo, hi) for granularity, lo, hi in out if lo < hi]


def window_counts(
    session: Session, endpoints: Collection[str], start: datetime, end: datetime
) -> dict[str, Counts]:
    """Valid, failed and slow events per endpoint in ``[start, end)``, from the rollups."""
    totals: dict[str, Counts] = defaultdict(Counts)
    if not endpoints:
        return totals
    table = UsageRollupRow
    for granularity, lo, hi in spans(start, end):
        query = (
            select(
                table.endpoint,
                func.coalesce(func.sum(table.slo_requests), 0),
                func.coalesce(func.sum(table.errors), 0),
                func.coalesce(func.sum(table.slow), 0),
            )
            .where(
                table.granularity == granularity,
                table.bucket_start >= lo,
                table.bucket_start < hi,
                table.endpoint.in_(list(endpoints)),
            )
            .group_by(table.endpoint)
        )
        for endpoint, valid, errors, slow in session.execute(query):
            totals[endpoint] += Counts(int(valid), int(errors), int(slow))
    return totals


def _statuses(session: Session, specs: Mapping[str, SloSpec], now: float) -> dict[str, SloStatus]:
    if not specs:
        return {}
    end = datetime.fromtimestamp(now, UTC)
    names = list(specs)
    burn = {
        window: window_counts(session, names, end - timedelta(seconds=seconds), end)
        for window, seconds in BURN_WINDOWS.items()
    }
    by_window: dict[float, list[str]] = defaultdict(list)
    for name, spec in specs.items():
        by_window[spec.window_s].append(name)
    statuses = {}
    for window_s, group in by_window.items():
        totals = window_counts(session, group, end - timedelta(seconds=window_s), end)
        for name in group:
            statuses[name] = evaluate(
                name,
                specs[name],
                totals.get(name, Counts()),
                {window: counts[name] for window, counts in burn.items() if name in counts},
                at=now,
            )
    return statuses


def endpoint_slo(session: Session, name: str, now: float) -> SloStatus | None:
    """The endpoint's SLO evaluated now; ``None`` if it has none. ``NotFound`` naming the
    endpoint if there is no such endpoint."""
    row = endpoint_service.get_endpoint(session, name)
    spec = spec_of(row)
    if spec is None:
        return None
    return _statuses(session, {name: spec}, now)[name]


class SloBook:
    """Every endpoint's SLO status, re-evaluated in the background every ``interval_s``."""

    def __init__(
        self,
        db: Database,
        alerts: Alerts | None = None,
        *,
        interval_s: float = 5.0,
        resolve_after_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.alerts = alerts
        self.interval_s = interval_s
        self.resolve_after_s = resolve_after_s
        self.clock = clock
        # Open alerts whose condition cleared, and since when: each closes once it has stayed
        # clear for resolve_after_s, so a rate hovering at a threshold is one episode, not
        # an opened and resolved notice every few seconds.
        self._clear_since: dict[str, float] = {}
        # Both replaced whole, never changed in place: readers in other threads (the usage
        # loader, the metrics collector) see one complete version or the next.
        self._targets: Mapping[str, float] = {}
        self._statuses: Mapping[str, SloStatus] = {}
        self._task: asyncio.Task[None] | None = None

    def latency_target_ms(self, endpoint: str) -> float | None:
        """The endpoint's p95 latency target in ms, from memory (``None``: no target)."""
        return self._targets.get(endpoint)

    def snapshot(self) -> Mapping[str, SloStatus]:
        """The last evaluation: endpoint -> status, for endpoints with an SLO."""
        return self._statuses

    async def start(self) -> None:
        """Evaluate once (so latency targets are known before usage is loaded), then keep
        evaluating in the background."""
        await self._tick()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._tick()

    async def _tick(self) -> None:
        try:
            await self.evaluate()
        except Exception:  # a bad tick (database busy) must not end the loop
            log.exception("SLO evaluation failed")

    async def evaluate(self) -> Mapping[str, SloStatus]:
        """Re-read every endpoint's SLO and counts; open and close SLO alerts to match."""
        now = self.clock()
        statuses = await asyncio.to_thread(self._read, now)
        self._statuses = statuses
        if self.alerts is not None:
            await self._reconcile(statuses, now)
        return statuses

    def _read(self, now: float) -> dict[str, SloStatus]:
        with self.db.session() as session:
            specs = {}
            for row in endpoint_service.list_endpoints(session):
                spec = spec_of(row)
                if spec is not None:
                    specs[row.name] = spec
            self._targets = {
                name: target
                for name, spec in specs.items()
                if (target := spec.latency_target_ms) is not None
            }
            return _statuses(session, specs, now)

    async def _reconcile(self, statuses: Mapping[str, SloStatus], now: float) -> None:
        assert self.alerts is not None
        wanted = {c.key: c for status in statuses.values() for c in status.alerts()}
        current = {k for k in await self.alerts.open_keys() if k.startswith(ALERT_PREFIX)}
        tracked = {
            f"{ALERT_PREFIX}{status.endpoint}:{o.objective.name}:"
            for status in statuses.values()
            for o in status.objectives
        }
        for key in sorted(current - wanted.keys()):
            cleared = self._clear_since.setdefault(key, now)
            # An endpoint deleted, or an objective removed from its SLO: nothing to wait for.
            gone = not key.startswith(tuple(tracked))
            if gone or now - cleared >= self.resolve_after_s:
                await self.alerts.close(key)
                self._clear_since.pop(key, None)
        for key in list(self._clear_since):
            if key in wanted or key not in current:
                del self._clear_since[key]
        for key, condition in wanted.items():
            if key not in current:
                await self.alerts.open(
                    key, condition.kind, condition.endpoint, condition.summary, condition.data
                )


def status_dict(status: SloStatus | None, name: str, alerts: list[Any]) -> dict[str, Any]:
    """``GET /api/v1/endpoints/{name}/slo``'s answer."""
    if status is None:
        return {
            "endpoint": name,
            "window": None,
            "window_s": None,
            "sli": None,
            "budget_remaining": None,
            "objectives": [],
            "alerts": alerts,
            "message": f"endpoint '{name}' has no SLO: set slo.availability and/or "
            "slo.p95_latency_ms in its modelport.yaml and apply it",
        }
    return {**status.to_dict(), "alerts": alerts, "message": ""}
