"""``/api/v1/limits``: requests, tokens per minute and concurrency per key, project, team,
customer or endpoint."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from modelport.control import limits as service
from modelport.control.deps import ActorDep, PlaneDep, audit_change
from modelport.control.limits import LimitPublic

router = APIRouter(prefix="/limits", tags=["limits"])

# Strict: "5", 5.0 and true are mistakes to name, not numbers to guess at.
_Positive = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]


class LimitSet(BaseModel):
    """The scope's limits (each a positive integer, or null for none); replaces what was set."""

    model_config = ConfigDict(extra="forbid")

    rpm: _Positive | None = Field(default=None, description="requests per minute")
    tpm: _Positive | None = Field(default=None, description="tokens (input + output) per minute")
    concurrency: _Positive | None = Field(default=None, description="requests at a time")


@router.put("/{kind}/{name}")
async def set_limit(
    kind: str, name: str, body: LimitSet, request: Request, plane: PlaneDep, actor: ActorDep
) -> LimitPublic:
    """Set the limits of one scope (kind: key, project, team, customer or endpoint). The
    tightest limit of all the caller's scopes applies; the gateway has it at once."""
    service.check_kind(kind)

    def store() -> tuple[LimitPublic | None, LimitPublic]:
        with plane.db.session() as session:
            return service.set_limit(session, kind, name, **body.model_dump(), actor=actor.name)

    before, after = await asyncio.to_thread(store)
    await plane.limits.refresh()
    await audit_change(
        plane,
        request,
        actor,
        action="limits.set",
        target=f"{kind}:{name}",
        before=before.model_dump(mode="json") if before else None,
        after=after.model_dump(mode="json"),
    )
    return after


@router.get("")
async def list_limits(plane: PlaneDep, _: ActorDep, kind: str | None = None) -> list[LimitPublic]:
    """Every limit: set through the API (``source: api``) and by endpoint intents
    (``source: intent``); ``?kind=`` keeps one kind."""

    def read() -> list[LimitPublic]:
        with plane.db.session() as session:
            return service.list_limits(session, kind)

    return await asyncio.to_thread(read)


@router.delete("/{kind}/{name}")
async def delete_limit(
    kind: str, name: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> LimitPublic:
    """Remove the limits set through the API on one scope (an endpoint intent's stay)."""
    service.check_kind(kind)

    def remove() -> LimitPublic:
        with plane.db.session() as session:
            return service.delete_limit(session, kind, name)

    before = await asyncio.to_thread(remove)
    await plane.limits.refresh()
    await audit_change(
        plane,
        request,
        actor,
        action="limits.delete",
        target=f"{kind}:{name}",
        before=before.model_dump(mode="json"),
    )
    return before
