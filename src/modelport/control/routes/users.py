"""``/api/v1/users``: people who use the control plane with their own token (admins only),
and ``/api/v1/me``: who the caller is."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from modelport.control import identity as service
from modelport.control.deps import ActorDep, PlaneDep, SessionDep, audit_change
from modelport.control.identity import UserCreate, UserCreated, UserPublic

router = APIRouter(tags=["users"])


@router.post("/users", status_code=201)
async def create_user(
    body: UserCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> UserCreated:
    """A new user; its token is in this response only."""

    def create() -> UserCreated:
        with plane.db.session() as session:
            row, token = service.create_user(session, name=body.name, admin=body.admin)
            public = service.user_public(session, row)
            return UserCreated(**public.model_dump(), token=token)

    user = await asyncio.to_thread(create)
    await plane.identities.refresh()
    await audit_change(
        plane,
        request,
        actor,
        action="users.create",
        target=f"user:{user.name}",
        after={"admin": user.admin},
    )
    return user


@router.get("/users")
def list_users(session: SessionDep, _: ActorDep) -> list[UserPublic]:
    return [service.user_public(session, row) for row in service.list_users(session)]


@router.post("/users/{name}/token")
async def rotate_token(
    name: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> UserCreated:
    """A new token for the user; the old one stops working at once."""

    def rotate() -> UserCreated:
        with plane.db.session() as session:
            row, token = service.rotate_token(session, name)
            return UserCreated(**service.user_public(session, row).model_dump(), token=token)

    user = await asyncio.to_thread(rotate)
    await plane.identities.refresh()
    await audit_change(plane, request, actor, action="users.rotate", target=f"user:{name}")
    return user


@router.post("/users/{name}/disable")
async def disable_user(name: str, request: Request, plane: PlaneDep, actor: ActorDep) -> UserPublic:
    """Stop the user's token and logins at once; its role bindings are kept."""

    def disable() -> UserPublic:
        with plane.db.session() as session:
            return service.user_public(session, service.disable_user(session, name))

    user = await asyncio.to_thread(disable)
    await plane.identities.refresh()
    await audit_change(plane, request, actor, action="users.disable", target=f"user:{name}")
    return user


@router.get("/me")
def whoami(actor: ActorDep) -> dict[str, Any]:
    """Who the caller is, as the control plane sees it: name, kind, roles."""
    return {
        "name": actor.name,
        "kind": actor.kind,
        "admin": actor.is_admin,
        "teams": dict(actor.teams),
        "project": actor.project or None,
    }
