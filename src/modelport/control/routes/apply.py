"""``/api/v1/apply``: create or update an endpoint from a ``modelport.yaml`` intent file."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select

from modelport.control.deps import ActorDep, ControllerDep
from modelport.control.plane import ControlPlane
from modelport.control.schemas import ApplyRequest, ApplyResult
from modelport.core.errors import InvalidRequest
from modelport.core.intent import Intent, parse_intent
from modelport.core.intent_yaml import field_line
from modelport.governance.identity import Actor
from modelport.store.tables import EndpointRow

router = APIRouter(tags=["apply"])


@router.post("/apply")
async def apply(
    body: ApplyRequest, request: Request, controller: ControllerDep, actor: ActorDep
) -> ApplyResult:
    """Apply an intent; with ``dry_run`` say what would change (``modelport diff``)."""
    # Off the loop: parsing and validating 64 KB of YAML is CPU work that would stall the
    # gateway sharing this loop (and its health checks).
    intent = await asyncio.to_thread(parse_intent, body.intent, filename=body.filename)
    plane = controller.plane
    before = None if body.dry_run else await asyncio.to_thread(_stored_intent, plane, intent)
    try:
        result = await controller.apply(intent, dry_run=body.dry_run, actor=actor)
    except InvalidRequest as exc:
        param = exc.details.get("param")
        if param in ("environment", "resources.hardware"):  # where in the file to fix it
            line = field_line(body.intent, str(param))
            if line is not None:
                exc.message = f"{body.filename} line {line}: {exc.message}"
                exc.details["line"] = line
        raise
    if not body.dry_run:  # the intent's limits reach the gateway with the endpoint
        await controller.plane.limits.refresh()
        if plane.budgets is not None:  # and its budget.monthly_usd, seeded before enforced
            await plane.budgets.refresh()
        await asyncio.to_thread(_record, plane, request, actor, intent, before, result)
    return result


def _stored_intent(plane: ControlPlane, intent: Intent) -> dict[str, Any] | None:
    with plane.db.session() as session:
        row = session.scalar(select(EndpointRow).where(EndpointRow.name == intent.endpoint))
        return None if row is None else row.intent


def _record(
    plane: ControlPlane,
    request: Request,
    actor: Actor,
    intent: Intent,
    before: dict[str, Any] | None,
    result: ApplyResult,
) -> None:
    # Before and after are the endpoint's stored intent: one apply's "after" digest is the
    # next one's "before".
    plane.audit.change(
        request.scope,
        actor,
        action="endpoints.apply",
        target=f"endpoint:{result.endpoint}",
        before=before,
        after=_stored_intent(plane, intent),
        details={"result": result.action, "revision": result.revision or ""},
    )
    if result.rollout is not None:
        rollout = result.rollout.model_dump(
            mode="json", include={"id", "from_revision", "to_revision", "strategy", "steps"}
        )
        plane.audit.change(
            request.scope,
            actor,
            action="rollouts.start",
            target=f"endpoint:{result.endpoint}",
            after=rollout,
            details={"rollout": result.rollout.id, "revision": result.rollout.to_revision},
        )
