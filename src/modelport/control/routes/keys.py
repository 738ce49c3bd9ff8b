"""``/api/v1/keys``: data-plane API keys, shown once at creation (and rotation)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from modelport.control import keys as service
from modelport.control.deps import ActorDep, PlaneDep, SessionDep
from modelport.control.plane import ControlPlane
from modelport.control.policies import key_context
from modelport.control.schemas import KeyCreate, KeyCreated, KeyPublic, KeyRotate
from modelport.governance.identity import Actor

router = APIRouter(prefix="/keys", tags=["keys"])


def _audit(
    plane: ControlPlane,
    request: Request,
    actor: Actor,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    # Blocking (a DB write): called from the worker thread the change ran in.
    state = request.scope.get("state") or {}
    plane.audit.record(
        actor=actor,
        action=action,
        target=f"key:{target}",
        request_id=str(state.get("request_id", "")),
        source=(request.scope.get("client") or ("",))[0],
        before=before,
        after=after,
    )


@router.post("", status_code=201)
async def create_key(
    body: KeyCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> KeyCreated:
    """A new key; the answer holds the key itself, the only time it is shown."""

    # The database is blocking I/O: in a thread, never on the loop the gateway shares.
    def create() -> KeyCreated:
        with plane.db.session() as session:
            # Before anything is stored: an enforced policy that denies is a 403 naming it.
            plane.policies.check(
                "key_create",
                key_context(key=body.model_dump(mode="json"), actor=actor),
                actor,
                target=f"project:{body.project}",
            )
            row, key = service.create_key(session, body, created_by=actor.name)
            public = service.key_public(row)
        _audit(
            plane, request, actor, "keys.create", public.id, after=public.model_dump(mode="json")
        )
        return KeyCreated(key=key, **public.model_dump())

    created = await asyncio.to_thread(create)
    await plane.refresh_keys()
    return created


@router.get("")
def list_keys(session: SessionDep, actor: ActorDep, project: str | None = None) -> list[KeyPublic]:
    """Keys by prefix (never the key itself), of one ``project`` if given."""
    return [
        service.key_public(row) for row in service.list_keys(session, project=project, actor=actor)
    ]


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request, plane: PlaneDep, actor: ActorDep) -> KeyPublic:
    """Revoke a key now: the gateway refuses it from the next request on."""

    def revoke() -> KeyPublic:
        with plane.db.session() as session:
            row = service.get_key(session, key_id)
            before = service.key_public(row).model_dump(mode="json")
            public = service.key_public(service.revoke_key(session, key_id))
        after = public.model_dump(mode="json")
        _audit(plane, request, actor, "keys.revoke", key_id, before=before, after=after)
        return public

    revoked = await asyncio.to_thread(revoke)
    await plane.refresh_keys()
    return revoked


@router.post("/{key_id}/rotate", status_code=201)
async def rotate_key(
    key_id: str, body: KeyRotate, request: Request, plane: PlaneDep, actor: ActorDep
) -> KeyCreated:
    """A new key with the same settings (shown once); the old one works ``grace`` seconds more."""

    def rotate() -> KeyCreated:
        with plane.db.session() as session:
            before = service.key_public(service.get_key(session, key_id)).model_dump(mode="json")
            old, row, key = service.rotate_key(
                session, key_id, grace_s=body.grace, created_by=actor.name
            )
            old_after = service.key_public(old).model_dump(mode="json")
            public = service.key_public(row)
        _audit(plane, request, actor, "keys.rotate", key_id, before=before, after=old_after)
        _audit(
            plane, request, actor, "keys.create", public.id, after=public.model_dump(mode="json")
        )
        return KeyCreated(key=key, **public.model_dump())

    rotated = await asyncio.to_thread(rotate)
    await plane.refresh_keys()
    return rotated
