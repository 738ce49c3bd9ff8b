"""``/api/v1/usage``: what the gateway metered, request by request (most recent first)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from modelport.control.deps import AdminDep, PlaneDep

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("/recent")
async def recent_usage(
    plane: PlaneDep, _: AdminDep, limit: int = Query(default=100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The last requests with their units; the durable journal comes with metering."""
    # Async on purpose: the gateway appends to this ring on the event loop, and copying it
    # from a thread-pool thread could meet an append half-way (deque mutated during
    # iteration). Copying it here, on the loop, takes microseconds and does no I/O.
    return [record.to_dict() for record in reversed(plane.usage.recent(limit))]
