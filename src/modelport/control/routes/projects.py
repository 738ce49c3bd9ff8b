"""``/api/v1/projects``: projects and the team that owns each. Admins create them; listing
shows the projects of the caller's teams (every project for an admin)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from modelport.control import identity as service
from modelport.control.deps import ActorDep, PlaneDep, SessionDep, audit_change
from modelport.control.identity import ProjectCreate, ProjectPublic

router = APIRouter(prefix="/projects", tags=["projects"])


def _public(name: str, team: str, created_at: object) -> ProjectPublic:
    return ProjectPublic.model_validate({"name": name, "team": team, "created_at": created_at})


@router.post("", status_code=201)
async def create_project(
    body: ProjectCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> ProjectPublic:
    def create() -> ProjectPublic:
        with plane.db.session() as session:
            row = service.create_project(session, name=body.name, team=body.team)
            return _public(row.name, row.team, row.created_at)

    project = await asyncio.to_thread(create)
    await audit_change(
        plane,
        request,
        actor,
        action="projects.create",
        target=f"project:{project.name}",
        after={"team": project.team},
    )
    return project


@router.get("")
def list_projects(session: SessionDep, actor: ActorDep) -> list[ProjectPublic]:
    return [
        _public(row.name, row.team, row.created_at)
        for row in service.list_projects(session)
        if actor.may("read", row.team)
    ]
