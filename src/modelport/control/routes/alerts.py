"""``/api/v1/alerts``: where alert notices go (webhooks) and what was alerted (episodes)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Query, Request, Response

from modelport.control import alerts as service
from modelport.control.alerts import EpisodePublic, WebhookCreate, WebhookCreated, WebhookPublic
from modelport.control.deps import ActorDep, AdminDep, PlaneDep, SessionDep

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.post("/webhooks", status_code=201)
async def create_webhook(
    body: WebhookCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> WebhookCreated:
    """A webhook every alert notice is POSTed to, signed with its secret (shown only here)."""

    def create() -> WebhookCreated:
        with plane.db.session() as session:
            created = service.create_webhook(session, body, plane.settings, plane.secrets.cipher)
        # The public view only: the signing secret stays out of the log.
        public = WebhookPublic.model_validate(created.model_dump(exclude={"secret"}))
        plane.audit.change(
            request.scope,
            actor,
            action="alerts.webhook_create",
            target=f"webhook:{created.id}",
            after=public.model_dump(mode="json"),
        )
        return created

    # In a thread: the URL's host is resolved, and the database is blocking I/O.
    return await asyncio.to_thread(create)


@router.get("/webhooks")
def list_webhooks(session: SessionDep, _: AdminDep) -> list[WebhookPublic]:
    return service.list_webhooks(session)


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> Response:
    def delete() -> None:
        with plane.db.session() as session:
            service.delete_webhook(session, webhook_id)
        plane.audit.change(
            request.scope, actor, action="alerts.webhook_delete", target=f"webhook:{webhook_id}"
        )

    await asyncio.to_thread(delete)
    return Response(status_code=204)


@router.get("")
def list_alerts(
    session: SessionDep,
    _: AdminDep,
    state: Literal["open", "closed", "all"] = "all",
    endpoint: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[EpisodePublic]:
    """Alert episodes: open ones first, then the most recent closed ones."""
    return service.list_episodes(session, state=state, endpoint=endpoint, limit=limit)
