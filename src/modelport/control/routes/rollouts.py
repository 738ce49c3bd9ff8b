"""``/api/v1/endpoints/{name}/rollout``: watch and steer the rollout of a new revision."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request

from modelport.control import endpoints as endpoint_service
from modelport.control import rollouts as service
from modelport.control import views
from modelport.control.deps import (
    ActorDep,
    AdminDep,
    ControllerDep,
    PlaneDep,
    SessionDep,
    audit_change,
)
from modelport.control.schemas import RevisionPublic, RolloutPublic

router = APIRouter(prefix="/endpoints/{name}", tags=["rollouts"])

Action = Literal["pause", "resume", "promote", "rollback", "abort", "approve"]


@router.get("/rollout")
def rollout_status(
    name: str, session: SessionDep, controller: ControllerDep, _: AdminDep
) -> RolloutPublic:
    """The rollout in progress, or the last one."""
    row = endpoint_service.get_endpoint(session, name)
    return controller.public(session, service.latest_rollout(session, row))


@router.get("/rollouts")
def rollout_history(
    name: str, session: SessionDep, controller: ControllerDep, _: AdminDep
) -> list[RolloutPublic]:
    """Every rollout of the endpoint, newest first, with its events."""
    row = endpoint_service.get_endpoint(session, name)
    return [controller.public(session, rollout) for rollout in reversed(row.rollouts)]


@router.post("/rollout/{action}")
async def steer(
    name: str,
    action: Action,
    plane: PlaneDep,
    controller: ControllerDep,
    who: ActorDep,
    request: Request,
) -> RolloutPublic:
    """Pause, resume, promote, roll back, abort or approve. ``rollback`` with no rollout in
    progress undoes the last promotion. ``approve``: a second person (not the rollout's
    starter) approves its promotion where a policy asks for one (four-eyes)."""
    actor = who.name

    def exists() -> None:
        with plane.db.session() as session:
            endpoint_service.get_endpoint(session, name)

    await asyncio.to_thread(exists)
    if action == "pause":
        await controller.pause(name, actor=actor)
    elif action == "resume":
        await controller.resume(name, actor=actor)
    elif action == "promote":
        await controller.promote(name, actor=who)
    elif action == "approve":
        await controller.approve(name, actor=who)
        await audit_change(
            plane, request, who, action="rollouts.approve", target=f"endpoint:{name}"
        )
    else:
        await controller.rollback(name, actor=actor, abort=action == "abort")

    def status() -> RolloutPublic:
        with plane.db.session() as session:
            row = endpoint_service.get_endpoint(session, name)
            public = controller.public(session, service.latest_rollout(session, row))
        if action != "approve":  # recorded above, with the approval
            plane.audit.change(
                request.scope,
                who,
                action=f"rollouts.{action}",
                target=f"endpoint:{name}",
                after={"state": public.state.value, "step": public.step},
                details={"rollout": public.id, "revision": public.to_revision},
            )
        return public

    return await asyncio.to_thread(status)


@router.get("/revisions")
def list_revisions(
    name: str, plane: PlaneDep, session: SessionDep, _: AdminDep
) -> list[RevisionPublic]:
    """Every revision of the endpoint, oldest first; running ones with their traffic share."""
    row = endpoint_service.get_endpoint(session, name)
    return views.revisions_public(plane, row)
