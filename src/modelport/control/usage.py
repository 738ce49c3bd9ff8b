"""Usage reports: sums per team, project, customer, endpoint, revision or key, from rollups.

A report never scans raw events: it covers its range with the coarsest rollup buckets that
fit (days in the middle, hours and minutes at the edges; see :func:`plan`), so a month is
about thirty rows per combination, found through the (granularity, bucket_start) index. The
range is widened to whole minutes, and within it the sums equal the raw events exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from modelport.control.keys import key_teams
from modelport.control.times import parse_time
from modelport.core.errors import InvalidRequest, NotFound
from modelport.store.tables import ROLLUP_SUMS, EndpointRow, UsageEventRow, UsageRollupRow

__all__ = [
    "BY",
    "FILTERS",
    "add_outcomes",
    "events",
    "plan",
    "report",
    "report_csv",
]

#: ``by=`` -> the columns a report row is grouped by.
BY: Mapping[str, tuple[str, ...]] = {
    "team": ("team",),
    "project": ("project",),
    "customer": ("customer",),
    "endpoint": ("endpoint",),
    "revision": ("endpoint", "revision"),  # "r2" means nothing without its endpoint
    "key": ("key_id",),
}
#: Filter parameter -> column.
FILTERS: Mapping[str, str] = {
    "team": "team",
    "project": "project",
    "customer": "customer",
    "endpoint": "endpoint",
    "revision": "revision",
    "key": "key_id",
}
_MINUTE, _HOUR, _DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EVENTS = 1000


def _floor(when: datetime, size: timedelta) -> datetime:
    return _EPOCH + ((when - _EPOCH) // size) * size


def _ceil(when: datetime, size: timedelta) -> datetime:
    floor = _floor(when, size)
    return floor if floor == when else floor + size


def plan(since: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
    """The rollup pieces ``(granularity, start, end)`` that tile ``[since, until)`` widened to
    whole minutes: minutes up to the first whole hour, hours up to the first whole day, days,
    then hours and minutes again at the end."""
    start, end = _floor(since, _MINUTE), _ceil(until, _MINUTE)
    pieces: list[tuple[str, datetime, datetime]] = []
    first_hour = min(_ceil(start, _HOUR), end)
    last_hour = max(_floor(end, _HOUR), first_hour)
    if start < first_hour:
        pieces.append(("minute", start, first_hour))
    if first_hour < last_hour:
        first_day = min(_ceil(first_hour, _DAY), last_hour)
        last_day = max(_floor(last_hour, _DAY), first_day)
        if first_hour < first_day:
            pieces.append(("hour", first_hour, first_day))
        if first_day < last_day:
            pieces.append(("day", first_day, last_day))
        if last_day < last_hour:
            pieces.append(("hour", last_day, last_hour))
    if last_hour < end:
        pieces.append(("minute", last_hour, end))
    return pieces


def _window(
    since: str | None, until: str | None, now: datetime | None
) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    end = parse_time(until, "until", now) if until else now
    start = parse_time(since or "24h", "since", now)
    if start >= end:
        raise InvalidRequest(
            f"since ({start.isoformat()}) must be before until ({end.isoformat()})",
            param="since",
        )
    return start, end


def _check_filters(session: Session, filters: Mapping[str, str | None]) -> dict[str, str]:
    chosen = {name: value for name, value in filters.items() if value is not None}
    for name in chosen:
        if name not in FILTERS:
            raise InvalidRequest(f"unknown filter {name!r}", param=name)
    team = chosen.get("team")
    if team and team not in key_teams(session):
        raise NotFound(
            f"no API key belongs to team {team!r} (create one with 'modelport keys create --team')",
            param="team",
        )
    return chosen


def report(
    session: Session,
    *,
    by: str,
    since: str | None = None,
    until: str | None = None,
    filters: Mapping[str, str | None] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Usage per ``by`` over ``[since, until)`` (default: the last 24 hours), from rollups.

    Rows carry the sums of the rollups (requests, units, ``errors``, ``slow``,
    ``cost_nanousd``...) and the mean latency; ``total`` sums every row."""
    group = BY.get(by)
    if group is None:
        raise InvalidRequest(f"by must be one of {', '.join(BY)}; got {by!r}", param="by")
    start, end = _window(since, until, now)
    chosen = _check_filters(session, filters or {})
    pieces = plan(start, end)
    table = UsageRollupRow.__table__
    columns = [table.c[name] for name in group]
    sums = [func.sum(table.c[name]).label(name) for name in ROLLUP_SUMS]
    query = (
        select(*columns, *sums)
        .where(
            or_(
                *(
                    and_(
                        table.c.granularity == granularity,
                        table.c.bucket_start >= piece_start,
                        table.c.bucket_start < piece_end,
                    )
                    for granularity, piece_start, piece_end in pieces
                )
            ),
            *(table.c[FILTERS[name]] == value for name, value in chosen.items()),
        )
        .group_by(*columns)
        .order_by(*columns)
    )
    rows = [_report_row(dict(row._mapping)) for row in session.execute(query)]
    if "endpoint" in group:
        add_outcomes(session, rows)
    total = {name: sum(row[name] for row in rows) for name in ROLLUP_SUMS}
    return {
        "by": by,
        "since": pieces[0][1].isoformat() if pieces else start.isoformat(),
        "until": pieces[-1][2].isoformat() if pieces else end.isoformat(),
        "filters": chosen,
        "pieces": [
            {"granularity": g, "since": s.isoformat(), "until": e.isoformat()} for g, s, e in pieces
        ],
        "rows": rows,
        "total": _report_row(total),
    }


def add_outcomes(session: Session, rows: list[dict[str, Any]]) -> None:
    """Set each row's ``outcome``: why its endpoint exists, from the endpoint's applied intent
    (``None`` for an endpoint without one, or deleted since)."""
    names = {row["endpoint"] for row in rows}
    if not names:
        return
    query = select(EndpointRow.name, EndpointRow.intent).where(EndpointRow.name.in_(names))
    outcomes = {name: (intent or {}).get("outcome") for name, intent in session.execute(query)}
    for row in rows:
        row["outcome"] = outcomes.get(row["endpoint"])


def _report_row(row: dict[str, Any]) -> dict[str, Any]:
    for name in ROLLUP_SUMS:
        value = row.get(name) or 0
        row[name] = float(value) if name in _FLOAT_SUMS else int(value)
    requests = row["requests"]
    row["latency_ms_mean"] = row["latency_ms_sum"] / requests if requests else None
    row["cost_usd"] = row["cost_nanousd"] / 1e9
    return row


_FLOAT_SUMS = frozenset({"audio_seconds", "latency_ms_sum", "upstream_ms_sum"})


def report_csv(result: Mapping[str, Any]) -> str:
    """A report as CSV: a header line, then one line per row (no total line)."""
    group = BY[result["by"]]
    names = [*group, *ROLLUP_SUMS, "latency_ms_mean", "cost_usd"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in result["rows"]:
        writer.writerow(["" if row[name] is None else row[name] for name in names])
    return buffer.getvalue()


def events(
    session: Session,
    *,
    since: str | None = None,
    until: str | None = None,
    filters: Mapping[str, str | None] | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Raw usage events in ``[since, until)``, newest first, at most ``limit`` (<= 1000)."""
    if not 1 <= limit <= _MAX_EVENTS:
        raise InvalidRequest(f"limit must be between 1 and {_MAX_EVENTS}", param="limit")
    start, end = _window(since, until, now)
    chosen = _check_filters(session, filters or {})
    table = UsageEventRow.__table__
    query = (
        select(table)
        .where(
            table.c.at >= start,
            table.c.at < end,
            *(table.c[FILTERS[name]] == value for name, value in chosen.items()),
        )
        .order_by(table.c.at.desc(), table.c.id.desc())
        .limit(limit)
    )
    out = []
    for row in session.execute(query):
        event = dict(row._mapping)
        event.pop("id", None)
        out.append(event)
    return out
