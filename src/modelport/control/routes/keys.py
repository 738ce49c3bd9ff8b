"""``/api/v1/keys``: data-plane API keys, shown once at creation."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from modelport.control import keys as service
from modelport.control.deps import AdminDep, PlaneDep, SessionDep
from modelport.control.schemas import KeyCreate, KeyCreated, KeyPublic

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=201)
async def create_key(body: KeyCreate, plane: PlaneDep, _: AdminDep) -> KeyCreated:
    # The database is blocking I/O: in a thread, never on the loop the gateway shares.
    def create() -> KeyCreated:
        with plane.db.session() as session:
            row, key = service.create_key(
                session, project=body.project, name=body.name, team=body.team
            )
            return KeyCreated(key=key, **service.key_public(row).model_dump())

    created = await asyncio.to_thread(create)
    await plane.refresh_keys()
    return created


@router.get("")
def list_keys(session: SessionDep, _: AdminDep) -> list[KeyPublic]:
    return [service.key_public(row) for row in service.list_keys(session)]


@router.delete("/{key_id}")
async def revoke_key(key_id: str, plane: PlaneDep, _: AdminDep) -> KeyPublic:
    def revoke() -> KeyPublic:
        with plane.db.session() as session:
            return service.key_public(service.revoke_key(session, key_id))

    revoked = await asyncio.to_thread(revoke)
    await plane.refresh_keys()
    return revoked
