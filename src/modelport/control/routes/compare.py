"""``/api/v1/compare``: candidates for an endpoint scored on an evaluation set, side by side."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request

from modelport.control import compare as service
from modelport.control.deps import ActorDep, PlaneDep
from modelport.control.plane import ControlPlane
from modelport.core.intent import parse_intent
from modelport.core.names import check_name

router = APIRouter(tags=["compare"])


@router.post("/compare")
async def compare(
    body: service.CompareRequest, request: Request, plane: PlaneDep, actor: ActorDep
) -> dict[str, Any]:
    """Run each candidate (``NAME:V`` or ``NAME@ALIAS``) in a temporary replica, score it on
    the evaluation set, time it, judge it against the intent's SLO and budget, and keep the
    result (``GET /endpoints/{name}/comparisons``). Every candidate and the whole evaluation
    set are checked before anything starts: a mistake is a 400 naming the candidate, or the
    column and line, and nothing is stored."""
    # Off the loop: parsing YAML and reading up to 10,000 examples is CPU work that would
    # stall the gateway sharing this loop.
    intent = await asyncio.to_thread(parse_intent, body.intent, filename=body.filename)
    prepared = await asyncio.to_thread(service.prepare, plane, intent, body)
    results = await service.compare(
        plane, prepared, duration_s=body.duration_s, concurrency=body.concurrency
    )
    return await asyncio.to_thread(_keep, plane, request, actor, prepared, results)


def _keep(
    plane: ControlPlane,
    request: Request,
    actor: Any,
    prepared: service.Prepared,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    stored = service.store(plane, prepared, results, created_by=actor.name)
    plane.audit.change(
        request.scope,
        actor,
        action="comparisons.run",
        target=f"endpoint:{prepared.intent.endpoint}",
        details={"comparison": stored["id"], "ranking": stored["ranking"]},
    )
    return stored


@router.get("/endpoints/{name}/comparisons")
def list_comparisons(
    name: str,
    plane: PlaneDep,
    limit: int = Query(default=20, ge=1, le=200),
) -> list[dict[str, Any]]:
    """The endpoint's stored comparisons, newest first (the endpoint need not exist yet: an
    intent's candidates are often compared before it is applied)."""
    check_name("endpoint", name)
    with plane.db.session() as session:
        return service.list_comparisons(session, name, limit=limit)
