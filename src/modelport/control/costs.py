"""Cost reports: unit cost from usage rollups, self-hosted compute cost from replica uptime.

Every amount is whole nano-USD, and every sum is exact:

- Unit cost is the sum of the events' ``cost_nanousd`` (priced by the ``PriceBook`` when
  the loader stored them), read from the hour rollups: the same integers, summed.
- Compute cost of a revision in an hour is its replicas' time in that hour times the price
  of their hardware in force at each moment (cut where a price changes), rounded once per
  (hardware, price) piece.
- That hour's compute cost is allocated to the consumers (team, project, key, customer) who
  used the revision in it, by their share of ``upstream_ms`` (the replicas' busy time), with
  largest remainders, so the parts sum exactly to the whole. An hour without busy time is
  idle: its cost belongs to no consumer and is reported on its own line.

Reports cover whole hours (the rollups' grain): ``since`` is rounded down and ``until`` up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from modelport.control.usage import FILTERS as USAGE_FILTERS
from modelport.control.usage import add_outcomes
from modelport.core.errors import InvalidRequest, NotFound
from modelport.observability.pricing import (
    US_PER_HOUR,
    PriceBook,
    allocate,
    format_usd,
    hour_pieces,
    replica_cost,
)
from modelport.store.tables import (
    ApiKeyRow,
    EndpointRow,
    ReplicaUptimeRow,
    UsageRollupRow,
)

__all__ = ["REPORT_DIMENSIONS", "CostFilters", "cost_report"]

#: ``by=`` of a report, and the usage dimension (rollup column) each one groups by: the same
#: names as the usage report's filters.
REPORT_DIMENSIONS = USAGE_FILTERS
_CONSUMER_FILTERS = ("team", "project", "customer", "key")
_HOUR = timedelta(hours=1)
_ROLLUPS = UsageRollupRow.__table__


@dataclass(frozen=True, slots=True)
class CostFilters:
    """Which usage a report covers; None matches everything."""

    team: str | None = None
    project: str | None = None
    customer: str | None = None
    key: str | None = None
    endpoint: str | None = None

    @property
    def by_consumer(self) -> bool:
        return any(getattr(self, name) is not None for name in _CONSUMER_FILTERS)

    def matches(self, row: _Usage) -> bool:
        return (
            (self.team is None or row.team == self.team)
            and (self.project is None or row.project == self.project)
            and (self.customer is None or row.customer == self.customer)
            and (self.key is None or row.key_id == self.key)
            and (self.endpoint is None or row.endpoint == self.endpoint)
        )


@dataclass(slots=True)
class _Usage:
    """One consumer's use of one revision in one hour (summed over the other dimensions)."""

    hour: datetime
    endpoint: str
    revision: str
    team: str
    project: str
    key_id: str
    customer: str
    requests: int
    upstream_ms: float
    unit_nanousd: int
    compute_nanousd: int = 0


@dataclass(slots=True)
class _Compute:
    """One revision's replicas in one hour."""

    replica_us: int = 0
    nanousd: int = 0


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment else floor + _HOUR


def _us(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _hour_of(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


# Where each filter's value may be found: a filter naming none of them is a mistake.
_KNOWN_IN: dict[str, tuple[Any, ...]] = {
    "team": (ApiKeyRow.team, UsageRollupRow.team),
    "project": (ApiKeyRow.project, UsageRollupRow.project),
    "customer": (UsageRollupRow.customer,),
    "key": (ApiKeyRow.id, UsageRollupRow.key_id),
    "endpoint": (EndpointRow.name, UsageRollupRow.endpoint, ReplicaUptimeRow.endpoint),
}


def _check_exists(session: Session, filters: CostFilters) -> None:
    """A filter naming something Modelport never saw is a 404, not an empty report."""
    for name, columns in _KNOWN_IN.items():
        value = getattr(filters, name)
        if value is None:
            continue
        if not any(
            session.scalar(select(column).where(column == value).limit(1)) is not None
            for column in columns
        ):
            raise NotFound(
                f"{name} '{value}' is unknown: no key, endpoint or usage names it", param=name
            )


def _usage(
    session: Session, since: datetime, until: datetime, endpoint: str | None
) -> list[_Usage]:
    columns = (
        _ROLLUPS.c.bucket_start,
        _ROLLUPS.c.endpoint,
        _ROLLUPS.c.revision,
        _ROLLUPS.c.team,
        _ROLLUPS.c.project,
        _ROLLUPS.c.key_id,
        _ROLLUPS.c.customer,
    )
    query = (
        select(
            *columns,
            _ROLLUPS.c.requests,
            _ROLLUPS.c.upstream_ms_sum,
            _ROLLUPS.c.cost_nanousd,
        )
        .where(
            _ROLLUPS.c.granularity == "hour",
            _ROLLUPS.c.bucket_start >= since,
            _ROLLUPS.c.bucket_start < until,
        )
        .order_by(*columns)
    )
    if endpoint is not None:
        query = query.where(_ROLLUPS.c.endpoint == endpoint)
    merged: dict[tuple[Any, ...], _Usage] = {}
    # Through the table (Core), not the mapped class: no ORM bookkeeping for a month of rows.
    # Rollup rows also differ by model version and task: one consumer's hour is their sum.
    for hour, ep, rev, team, project, key_id, customer, requests, upstream, cost in session.execute(
        query
    ):
        key = (hour, ep, rev, team, project, key_id, customer)
        row = merged.get(key)
        if row is None:
            merged[key] = _Usage(
                hour, ep, rev, team, project, key_id, customer, requests, upstream, cost
            )
        else:
            row.requests += requests
            row.upstream_ms += upstream
            row.unit_nanousd += cost
    return list(merged.values())


def _compute(
    session: Session,
    prices: PriceBook,
    since: datetime,
    until: datetime,
    now: datetime,
    endpoint: str | None,
) -> dict[tuple[datetime, str, str], _Compute]:
    """Replica time and its cost per (hour, endpoint, revision) within the window."""
    query = select(ReplicaUptimeRow).where(
        ReplicaUptimeRow.started_at < until,
        or_(ReplicaUptimeRow.stopped_at.is_(None), ReplicaUptimeRow.stopped_at > since),
    )
    if endpoint is not None:
        query = query.where(ReplicaUptimeRow.endpoint == endpoint)
    # Piece time per (hour, endpoint, revision, hardware price), costed once per group.
    pieces: dict[tuple[int, str, str, int | None], int] = defaultdict(int)
    changes: dict[str, list[tuple[int, int]]] = {}
    for row in session.scalars(query):
        if row.hardware not in changes:
            changes[row.hardware] = [
                (round(start * 1_000_000), nano)
                for start, nano in prices.hardware_changes(row.hardware)
            ]
        start = _us(max(row.started_at, since))
        end = _us(min(row.stopped_at or now, until, now))
        for hour, us, price in hour_pieces(start, end, changes[row.hardware]):
            pieces[(hour, row.endpoint, row.revision, price)] += us
    compute: dict[tuple[datetime, str, str], _Compute] = defaultdict(_Compute)
    for (hour, ep, rev, price), us in pieces.items():
        cell = compute[(_hour_of(hour), ep, rev)]
        cell.replica_us += us
        if price is not None:  # before a hardware type had a price, its time is free
            cell.nanousd += replica_cost(price, us)
    return compute


def _allocate(
    usage: Sequence[_Usage], compute: dict[tuple[datetime, str, str], _Compute]
) -> dict[tuple[str, str], list[int]]:
    """Give each consumer its share of its revision's hour; return idle cost and replica
    time per (endpoint, revision)."""
    users: dict[tuple[datetime, str, str], list[_Usage]] = defaultdict(list)
    for row in usage:
        users[(row.hour, row.endpoint, row.revision)].append(row)
    idle: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for key, cell in compute.items():
        consumers = users.get(key, [])
        # Busy time in whole microseconds: integer weights, so the split is exact.
        weights = [max(0, round(row.upstream_ms * 1000)) for row in consumers]
        if sum(weights) > 0:
            for row, part in zip(consumers, allocate(cell.nanousd, weights), strict=True):
                row.compute_nanousd += part
        else:
            totals = idle[(key[1], key[2])]
            totals[0] += cell.nanousd
            totals[1] += cell.replica_us
    return idle


def _money(nano: int) -> dict[str, Any]:
    return {"nanousd": nano, "usd": format_usd(nano)}


def _hours(us: int) -> float:
    return round(us / US_PER_HOUR, 6)


def cost_report(
    session: Session,
    prices: PriceBook,
    *,
    by: str,
    since: datetime,
    until: datetime,
    filters: CostFilters = CostFilters(),
    now: datetime | None = None,
) -> dict[str, Any]:
    """What each team / project / customer / endpoint / revision / key spent in the window:
    unit cost, allocated compute cost and their total; idle compute cost on its own line;
    the compute cost of every revision (allocated + idle) to reconcile with."""
    if by not in REPORT_DIMENSIONS:
        raise InvalidRequest(
            f"cannot report costs by {by!r}: use one of {', '.join(REPORT_DIMENSIONS)}", param="by"
        )
    now = now or datetime.now(UTC)
    start, end = _floor_hour(since), _ceil_hour(until)
    if start >= end:
        raise InvalidRequest(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})",
            param="since",
        )
    _check_exists(session, filters)
    usage = _usage(session, start, end, filters.endpoint)
    compute = _compute(session, prices, start, end, now, filters.endpoint)
    idle = _allocate(usage, compute)
    column = REPORT_DIMENSIONS[by]
    groups: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in usage:
        if not filters.matches(row):
            continue
        key = (row.endpoint, row.revision) if by == "revision" else (getattr(row, column),)
        sums = groups[key]
        sums[0] += row.requests
        sums[1] += row.unit_nanousd
        sums[2] += row.compute_nanousd
    rows = [_row(by, key, *sums) for key, sums in sorted(groups.items())]
    if by in ("endpoint", "revision"):
        add_outcomes(session, rows)
    if filters.by_consumer:
        idle.clear()  # idle time belongs to no team, project, key or customer
    idle_total = sum(v[0] for v in idle.values())
    unit = sum(r["unit"]["nanousd"] for r in rows)
    allocated = sum(r["compute"]["nanousd"] for r in rows)
    return {
        "by": by,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "currency": "USD",
        "rows": rows,
        "idle": {
            **_money(idle_total),
            "replica_hours": _hours(sum(v[1] for v in idle.values())),
            "revisions": [
                {"endpoint": ep, "revision": rev, **_money(v[0]), "replica_hours": _hours(v[1])}
                for (ep, rev), v in sorted(idle.items())
            ],
        },
        "totals": {
            "requests": sum(r["requests"] for r in rows),
            "unit": _money(unit),
            "compute": _money(allocated),
            "idle": _money(idle_total),
            "total": _money(unit + allocated + idle_total),
        },
        "compute": _compute_lines(compute),
    }


def _row(by: str, key: tuple[str, ...], requests: int, unit: int, compute: int) -> dict[str, Any]:
    names = ("endpoint", "revision") if by == "revision" else (by,)
    return {
        **dict(zip(names, key, strict=True)),
        "requests": requests,
        "unit": _money(unit),
        "compute": _money(compute),
        "total": _money(unit + compute),
    }


def _compute_lines(compute: dict[tuple[datetime, str, str], _Compute]) -> list[dict[str, Any]]:
    """Each revision's whole compute cost in the window (every consumer's share plus idle)."""
    per: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (_, ep, rev), cell in compute.items():
        per[(ep, rev)][0] += cell.nanousd
        per[(ep, rev)][1] += cell.replica_us
    return [
        {"endpoint": ep, "revision": rev, **_money(v[0]), "replica_hours": _hours(v[1])}
        for (ep, rev), v in sorted(per.items())
    ]
