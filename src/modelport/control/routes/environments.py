"""``/api/v1/environments``: where endpoints run (shared, dedicated, isolated), the hardware
they offer and the data sensitivities they accept."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from modelport.control import environments as service
from modelport.control.deps import ActorDep, PlaneDep, audit_change
from modelport.control.environments import EnvironmentPublic
from modelport.control.planning import catalog_of

router = APIRouter(prefix="/environments", tags=["environments"])

# Strict: "512", 512.0 and true are mistakes to name, not numbers to guess at.
_Positive = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
_Names = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)]


class EnvironmentSpec(BaseModel):
    """What an environment offers. Sensitivities default by kind: shared takes public and
    internal data, dedicated and isolated every sensitivity."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="shared, dedicated or isolated")
    backend: str = Field(default="local", description="what runs its replicas")
    hardware: _Names = Field(default_factory=lambda: ["cpu"], description="catalog names")
    sensitivities: _Names | None = Field(default=None, description="data sensitivities accepted")
    memory_mb: _Positive | None = Field(default=None, description="isolated: memory per replica")
    cpus: _Positive | None = Field(default=None, description="isolated: CPUs per replica")


class EnvironmentCreate(EnvironmentSpec):
    """A new environment: its name and what it offers."""

    name: str = Field(max_length=64)


@router.post("", status_code=201)
async def create_environment(
    body: EnvironmentCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> EnvironmentPublic:
    """Create an environment (admin)."""

    def store() -> EnvironmentPublic:
        known = catalog_of(plane.settings).names()
        with plane.db.session() as session:
            return service.create_environment(
                session, **body.model_dump(), known_hardware=known, actor=actor.name
            )

    after = await asyncio.to_thread(store)
    await audit_change(
        plane,
        request,
        actor,
        action="environments.create",
        target=after.name,
        after=after.model_dump(mode="json"),
    )
    return after


@router.get("")
async def list_environments(plane: PlaneDep, _: ActorDep) -> list[EnvironmentPublic]:
    """Every environment, with the endpoints running in each."""

    def read() -> list[EnvironmentPublic]:
        with plane.db.session() as session:
            return service.list_environments(session)

    return await asyncio.to_thread(read)


@router.get("/{name}")
async def get_environment(name: str, plane: PlaneDep, _: ActorDep) -> EnvironmentPublic:
    """One environment, with the endpoints running in it."""

    def read() -> EnvironmentPublic:
        with plane.db.session() as session:
            row = service.get_environment(session, name)
            return service.public(row, service.users_of(session, name))

    return await asyncio.to_thread(read)


@router.put("/{name}")
async def replace_environment(
    name: str, body: EnvironmentSpec, request: Request, plane: PlaneDep, actor: ActorDep
) -> EnvironmentPublic:
    """Replace what an environment offers (admin). Running replicas keep what they started
    with; an endpoint's next apply or restart uses the new values."""

    def store() -> tuple[EnvironmentPublic, EnvironmentPublic]:
        known = catalog_of(plane.settings).names()
        with plane.db.session() as session:
            return service.replace_environment(
                session, name, **body.model_dump(), known_hardware=known
            )

    before, after = await asyncio.to_thread(store)
    await audit_change(
        plane,
        request,
        actor,
        action="environments.replace",
        target=name,
        before=before.model_dump(mode="json"),
        after=after.model_dump(mode="json"),
    )
    return after


@router.delete("/{name}")
async def delete_environment(
    name: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> EnvironmentPublic:
    """Delete an environment no endpoint uses (admin); 409 naming the endpoints otherwise."""

    def remove() -> EnvironmentPublic:
        with plane.db.session() as session:
            return service.delete_environment(session, name)

    before = await asyncio.to_thread(remove)
    await audit_change(
        plane,
        request,
        actor,
        action="environments.delete",
        target=name,
        before=before.model_dump(mode="json"),
    )
    return before
