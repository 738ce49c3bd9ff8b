"""``/api/v1/models``: registry of models, versions and aliases."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Response

from modelport.control import registry
from modelport.control.deps import AdminDep, PlaneDep, SessionDep
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
# the response is sent, and the client's next call must see what this one wrote.


@router.post("", status_code=201)
def create_model(body: ModelCreate, plane: PlaneDep, _: AdminDep) -> ModelPublic:
    with plane.db.session() as session:
        row = registry.create_model(session, **body.model_dump())
        session.refresh(row)
        return registry.model_public(row)


@router.get("")
def list_models(session: SessionDep, _: AdminDep) -> list[ModelPublic]:
    return [registry.model_public(row) for row in registry.list_models(session)]


@router.get("/{name}")
def get_model(name: str, session: SessionDep, _: AdminDep) -> ModelPublic:
    return registry.model_public(registry.get_model(session, name))


@router.delete("/{name}", status_code=204)
def delete_model(name: str, plane: PlaneDep, _: AdminDep) -> Response:
    with plane.db.session() as session:
        registry.delete_model(session, name)
    return Response(status_code=204)


@router.post("/{name}/versions", status_code=201)
async def create_version(
    name: str, body: VersionCreate, plane: PlaneDep, admin: AdminDep
) -> VersionPublic:
    return await asyncio.to_thread(plane.register_version, name, body, created_by=admin)


@router.get("/{name}/versions/{version}")
def get_version(
    name: str, version: _VersionNumber, session: SessionDep, _: AdminDep
) -> VersionPublic:
    return registry.version_public(registry.get_version(session, name, version))


@router.delete("/{name}/versions/{version}", status_code=204)
def delete_version(name: str, version: _VersionNumber, plane: PlaneDep, _: AdminDep) -> Response:
    with plane.db.session() as session:
        registry.delete_version(session, name, version)
    return Response(status_code=204)


@router.put("/{name}/aliases/{alias}")
def set_alias(name: str, alias: str, body: AliasSet, plane: PlaneDep, _: AdminDep) -> ModelPublic:
    with plane.db.session() as session:
        row = registry.set_alias(session, model=name, alias=alias, version=body.version)
        session.refresh(row.model)
        return registry.model_public(row.model)


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: str, alias: str, plane: PlaneDep, _: AdminDep) -> Response:
    with plane.db.session() as session:
        registry.delete_alias(session, model=name, alias=alias)
    return Response(status_code=204)
