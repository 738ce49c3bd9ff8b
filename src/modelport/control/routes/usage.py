"""``/api/v1/usage``: usage reports from rollups, raw events, and the last requests in memory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from modelport.control import usage as service
from modelport.control.deps import AdminDep, PlaneDep, SessionDep
from modelport.core.errors import InvalidRequest

router = APIRouter(prefix="/usage", tags=["usage"])

_FORMATS = ("json", "csv")


@router.get("")
def usage_report(
    session: SessionDep,
    _: AdminDep,
    by: str = Query(default="endpoint", description=f"One of {', '.join(service.BY)}."),
    since: str | None = Query(default=None, description="90m, 24h, 7d or ISO-8601 (24h)."),
    until: str | None = Query(default=None, description="Same forms as since (now)."),
    format: str = Query(default="json", description="json or csv."),
    team: str | None = None,
    project: str | None = None,
    customer: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    key: str | None = None,
) -> Any:
    """Usage summed per ``by`` over ``[since, until)``, filtered, from the rollups."""
    if format not in _FORMATS:
        raise InvalidRequest(f"format must be json or csv; got {format!r}", param="format")
    filters = {
        "team": team,
        "project": project,
        "customer": customer,
        "endpoint": endpoint,
        "revision": revision,
        "key": key,
    }
    result = service.report(session, by=by, since=since, until=until, filters=filters)
    if format == "csv":
        return Response(service.report_csv(result), media_type="text/csv")
    return result


@router.get("/events")
def usage_events(
    session: SessionDep,
    _: AdminDep,
    since: str | None = None,
    until: str | None = None,
    limit: int = 100,
    team: str | None = None,
    project: str | None = None,
    customer: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    key: str | None = None,
) -> list[dict[str, Any]]:
    """Raw usage events (kept for ``MODELPORT_USAGE_RETENTION_DAYS``), newest first."""
    filters = {
        "team": team,
        "project": project,
        "customer": customer,
        "endpoint": endpoint,
        "revision": revision,
        "key": key,
    }
    return service.events(session, since=since, until=until, filters=filters, limit=limit)


@router.get("/recent")
async def recent_usage(
    plane: PlaneDep, _: AdminDep, limit: int = Query(default=100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The last requests with their units, from memory (the journal's fan-out feeds it)."""
    # Async on purpose: the journal's fan-out appends to this ring on the event loop, and
    # copying it from a thread-pool thread could meet an append half-way (deque mutated
    # during iteration). Copying it here, on the loop, takes microseconds and does no I/O.
    return [record.to_dict() for record in reversed(plane.usage.recent(limit))]
