"""``/api/v1/costs``: what each team, project, customer, endpoint, revision or key spent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from modelport.control import costs as service
from modelport.control.deps import AdminDep, PlaneDep, SessionDep
from modelport.control.times import parse_time

router = APIRouter(prefix="/costs", tags=["costs"])


@router.get("")
def cost_report(
    plane: PlaneDep,
    session: SessionDep,
    _: AdminDep,
    by: str = "endpoint",
    since: str = "24h",
    until: str | None = None,
    team: str | None = None,
    project: str | None = None,
    customer: str | None = None,
    endpoint: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Unit cost, allocated compute cost and total per ``by``; idle compute cost on its own
    line. ``since``/``until``: ``24h``, ``7d``, ``month``, ``today`` or an ISO 8601 time."""
    now = datetime.now(UTC)
    return service.cost_report(
        session,
        plane.prices,
        by=by,
        since=parse_time(since, "since", now),
        until=parse_time(until, "until", now) if until else now,
        filters=service.CostFilters(
            team=team, project=project, customer=customer, key=key, endpoint=endpoint
        ),
        now=now,
    )
