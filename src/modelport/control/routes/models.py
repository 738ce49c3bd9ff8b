"""``/api/v1/models``: registry of models, versions and aliases."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from modelport.control import registry
from modelport.control.deps import ActorDep, AdminDep, PlaneDep, SessionDep
from modelport.control.schemas import (
    AliasSet,
    ModelCreate,
    ModelPublic,
    VersionCreate,
    VersionPublic,
)
from modelport.core.names import MAX_VERSION

router = APIRouter(prefix="/models", tags=["models"])

# Bounded so that a huge number is a 422 naming the parameter, not a database overflow.
_VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]


# Writes commit inside the route, before the response: a dependency's teardown may run after
# the response is sent, and the client's next call must see what this one wrote. Each change
# is then recorded in the audit log (from the route's worker thread: the write blocks).


@router.post("", status_code=201)
def create_model(
    body: ModelCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> ModelPublic:
    with plane.db.session() as session:
        row = registry.create_model(session, **body.model_dump())
        session.refresh(row)
        public = registry.model_public(row)
    plane.audit.change(
        request.scope,
        actor,
        action="models.create",
        target=f"model:{public.name}",
        after=public.model_dump(mode="json"),
    )
    return public


@router.get("")
def list_models(session: SessionDep, _: AdminDep) -> list[ModelPublic]:
    return [registry.model_public(row) for row in registry.list_models(session)]


@router.get("/{name}")
def get_model(name: str, session: SessionDep, _: AdminDep) -> ModelPublic:
    return registry.model_public(registry.get_model(session, name))


@router.delete("/{name}", status_code=204)
def delete_model(name: str, request: Request, plane: PlaneDep, actor: ActorDep) -> Response:
    with plane.db.session() as session:
        before = registry.model_public(registry.get_model(session, name))
        registry.delete_model(session, name)
    plane.audit.change(
        request.scope,
        actor,
        action="models.delete",
        target=f"model:{name}",
        before=before.model_dump(mode="json"),
    )
    return Response(status_code=204)


@router.post("/{name}/versions", status_code=201)
async def create_version(
    name: str, body: VersionCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> VersionPublic:
    def register() -> VersionPublic:
        version = plane.register_version(name, body, created_by=actor.name)
        plane.audit.change(
            request.scope,
            actor,
            action="models.register",
            target=f"model:{name}:{version.version}",
            after=version.model_dump(mode="json"),
        )
        return version

    return await asyncio.to_thread(register)


@router.get("/{name}/versions/{version}")
def get_version(
    name: str, version: _VersionNumber, session: SessionDep, _: AdminDep
) -> VersionPublic:
    return registry.version_public(registry.get_version(session, name, version))


@router.delete("/{name}/versions/{version}", status_code=204)
def delete_version(
    name: str, version: _VersionNumber, request: Request, plane: PlaneDep, actor: ActorDep
) -> Response:
    with plane.db.session() as session:
        before = registry.version_public(registry.get_version(session, name, version))
        registry.delete_version(session, name, version)
    plane.audit.change(
        request.scope,
        actor,
        action="models.version_delete",
        target=f"model:{name}:{version}",
        before=before.model_dump(mode="json"),
    )
    return Response(status_code=204)


@router.put("/{name}/aliases/{alias}")
def set_alias(
    name: str, alias: str, body: AliasSet, request: Request, plane: PlaneDep, actor: ActorDep
) -> ModelPublic:
    with plane.db.session() as session:
        before = registry.model_public(registry.get_model(session, name)).aliases.get(alias)
        row = registry.set_alias(session, model=name, alias=alias, version=body.version)
        session.refresh(row.model)
        public = registry.model_public(row.model)
    plane.audit.change(
        request.scope,
        actor,
        action="models.alias_set",
        target=f"model:{name}@{alias}",
        before=before,
        after=body.version,
    )
    return public


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(
    name: str, alias: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> Response:
    with plane.db.session() as session:
        before = registry.model_public(registry.get_model(session, name)).aliases.get(alias)
        registry.delete_alias(session, model=name, alias=alias)
    plane.audit.change(
        request.scope,
        actor,
        action="models.alias_delete",
        target=f"model:{name}@{alias}",
        before=before,
    )
    return Response(status_code=204)
