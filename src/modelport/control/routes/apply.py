"""``/api/v1/apply``: create or update an endpoint from a ``modelport.yaml`` intent file."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from modelport.control.deps import ActorDep, ControllerDep
from modelport.control.schemas import ApplyRequest, ApplyResult
from modelport.core.intent import parse_intent

router = APIRouter(tags=["apply"])


@router.post("/apply")
async def apply(body: ApplyRequest, controller: ControllerDep, actor: ActorDep) -> ApplyResult:
    """Apply an intent; with ``dry_run`` say what would change (``modelport diff``)."""
    # Off the loop: parsing and validating 64 KB of YAML is CPU work that would stall the
    # gateway sharing this loop (and its health checks).
    intent = await asyncio.to_thread(parse_intent, body.intent, filename=body.filename)
    result = await controller.apply(intent, dry_run=body.dry_run, actor=actor)
    if not body.dry_run:  # the intent's limits reach the gateway with the endpoint
        await controller.plane.limits.refresh()
    return result
