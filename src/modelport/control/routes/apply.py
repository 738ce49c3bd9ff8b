"""``/api/v1/apply``: create or update an endpoint from a ``modelport.yaml`` intent file."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from modelport.control import apply as service
from modelport.control.deps import AdminDep, ControllerDep, PlaneDep
from modelport.control.schemas import ApplyRequest, ApplyResult
from modelport.core.intent import parse_intent

router = APIRouter(tags=["apply"])


@router.post("/apply")
async def apply(
    body: ApplyRequest, plane: PlaneDep, controller: ControllerDep, actor: AdminDep
) -> ApplyResult:
    """Apply an intent; with ``dry_run`` say what would change (``modelport diff``)."""
    intent = parse_intent(body.intent, filename=body.filename)

    def work() -> tuple[ApplyResult, Any, Any]:
        with plane.db.session() as session:
            applied = service.apply_intent(session, intent, dry_run=body.dry_run, actor=actor)
            deployment = run = None
            if applied.revision is not None and applied.endpoint is not None:
                # Raises (and so rolls every row back) if the revision could not run.
                deployment = plane.prepare(applied.endpoint, applied.revision)
            if applied.rollout is not None:
                run = controller.run_of(applied.rollout)
            rollout = applied.rollout
            result = ApplyResult(
                endpoint=intent.endpoint,
                action=applied.action,
                dry_run=body.dry_run,
                changes=applied.changes,
                revision=f"r{applied.revision_number}" if applied.revision_number else None,
                rollout=controller.public(session, rollout) if rollout is not None else None,
                summary=("dry run: would " if body.dry_run else "") + applied.summary,
            )
            return result, deployment, run

    result, deployment, run = await asyncio.to_thread(work)
    if body.dry_run or result.action == "unchanged":
        return result
    if result.action == "created":
        await plane.serve(intent.endpoint, deployment, routing=intent.routing)
    elif result.action == "rollout":
        await plane.run_revision(intent.endpoint, deployment)
        plane.set_traffic(intent.endpoint, routing=intent.routing)
        controller.track(run)
    else:
        plane.set_traffic(intent.endpoint, routing=intent.routing)
    return result
