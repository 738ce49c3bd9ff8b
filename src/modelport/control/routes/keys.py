"""``/api/v1/keys``: data-plane API keys, shown once at creation."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.control import keys as service
from modelport.control.deps import AdminDep, PlaneDep, SessionDep
from modelport.control.schemas import KeyCreate, KeyCreated, KeyPublic

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=201)
async def create_key(body: KeyCreate, plane: PlaneDep, _: AdminDep) -> KeyCreated:
    with plane.db.session() as session:
        row, key = service.create_key(session, project=body.project, name=body.name)
        created = KeyCreated(key=key, **service.key_public(row).model_dump())
    await plane.refresh_keys()
    return created


@router.get("")
def list_keys(session: SessionDep, _: AdminDep) -> list[KeyPublic]:
    return [service.key_public(row) for row in service.list_keys(session)]


@router.delete("/{key_id}")
async def revoke_key(key_id: str, plane: PlaneDep, _: AdminDep) -> KeyPublic:
    with plane.db.session() as session:
        revoked = service.key_public(service.revoke_key(session, key_id))
    await plane.refresh_keys()
    return revoked
