"""``/api/v1/recommendations``: changes to an intent that traffic, latency and cost suggest."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query

from modelport.control import identity
from modelport.control import recommend as service
from modelport.control.access import endpoint_project
from modelport.control.deps import ActorDep, PlaneDep
from modelport.store.tables import EndpointRow

router = APIRouter(tags=["recommendations"])


@router.get("/recommendations")
async def recommendations(
    plane: PlaneDep,
    actor: ActorDep,
    endpoint: str | None = Query(
        default=None, description="One endpoint (default: every endpoint the caller may read)."
    ),
    days: str | None = Query(default=None, description="The window in days, up to 90 (7)."),
) -> dict[str, Any]:
    """Proposed changes to each endpoint's intent (replicas, hardware, batching, SLO), each
    with its reason, effect and diff. Read-only: nothing is ever applied."""
    window = service.check_days(days)

    def run() -> dict[str, Any]:
        with plane.db.session() as session:
            teams = identity.project_teams(session)

            def may_read(row: EndpointRow) -> bool:
                return actor.may("read", teams.get(endpoint_project(row)))

            return service.recommendations(
                session,
                plane.settings,
                plane.artifacts,
                endpoint=endpoint,
                days=window,
                may_read=may_read,
            )

    # Off the loop: rollup and event queries, and GGUF headers for LLMs.
    return await asyncio.to_thread(run)
