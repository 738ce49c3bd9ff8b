"""``/api/v1/teams``: teams and who holds which role on them.

Admins create teams; a team's owners (and admins) grant and revoke roles on it. Listing
shows the teams the caller holds a role on (every team for an admin).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from modelport.control import identity as service
from modelport.control.deps import ActorDep, PlaneDep, SessionDep, audit_change
from modelport.control.identity import MemberPublic, RoleGrant, TeamCreate, TeamPublic

router = APIRouter(prefix="/teams", tags=["teams"])


@router.post("", status_code=201)
async def create_team(
    body: TeamCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> TeamPublic:
    def create() -> TeamPublic:
        with plane.db.session() as session:
            return service.team_public(session, service.create_team(session, name=body.name))

    team = await asyncio.to_thread(create)
    await audit_change(
        plane, request, actor, action="teams.create", target=f"team:{team.name}", after=body.name
    )
    return team


@router.get("")
def list_teams(session: SessionDep, actor: ActorDep) -> list[TeamPublic]:
    return [
        service.team_public(session, row)
        for row in service.list_teams(session)
        if actor.may("read", row.name)
    ]


@router.get("/{team}")
def get_team(team: str, session: SessionDep, _: ActorDep) -> TeamPublic:
    return service.team_public(session, service.get_team(session, team))


@router.post("/{team}/members")
async def grant_role(
    team: str, body: RoleGrant, request: Request, plane: PlaneDep, actor: ActorDep
) -> MemberPublic:
    """Give a user a role on the team (replacing the one it had)."""

    def grant() -> None:
        with plane.db.session() as session:
            service.grant_role(session, team=team, user=body.user, role=body.role)

    await asyncio.to_thread(grant)
    await plane.identities.refresh()
    await audit_change(
        plane,
        request,
        actor,
        action="roles.grant",
        target=f"team:{team}/user:{body.user}",
        after=body.role,
    )
    return MemberPublic(user=body.user, role=body.role)


@router.delete("/{team}/members/{user}", status_code=204)
async def revoke_role(
    team: str, user: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> Response:
    def revoke() -> None:
        with plane.db.session() as session:
            service.revoke_role(session, team=team, user=user)

    await asyncio.to_thread(revoke)
    await plane.identities.refresh()
    await audit_change(
        plane, request, actor, action="roles.revoke", target=f"team:{team}/user:{user}"
    )
    return Response(status_code=204)
