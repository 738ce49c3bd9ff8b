"""``/api/v1/usage``: what the gateway metered, request by request (most recent first)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from modelport.control.deps import AdminDep, PlaneDep

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("/recent")
def recent_usage(
    plane: PlaneDep, _: AdminDep, limit: int = Query(default=100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The last requests with their units; the durable journal comes with metering."""
    return [record.to_dict() for record in reversed(plane.usage.recent(limit))]
