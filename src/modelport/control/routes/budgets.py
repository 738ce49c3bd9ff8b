"""``/api/v1/budgets``: daily and monthly caps in USD per key, project, team, customer and
endpoint, with what each has spent and holds reserved in its current period."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Request

from modelport.control import budgets as service
from modelport.control.deps import ActorDep, PlaneDep, audit_change
from modelport.control.plane import ControlPlane
from modelport.core.errors import InvalidRequest, Unavailable
from modelport.governance.budgets import KINDS

router = APIRouter(prefix="/budgets", tags=["budgets"])

_BODY = Body(
    examples=[{"monthly_usd": "500", "daily_usd": "20"}],
    description="daily_usd / monthly_usd: a number or decimal string of USD (>= 0, at most 9 "
    "decimals); left out or null, that period is not capped.",
)


def _budgets(plane: ControlPlane) -> service.BudgetService:
    budgets = getattr(plane, "budgets", None)
    if budgets is None:
        raise Unavailable("budgets are not running on this server")
    assert isinstance(budgets, service.BudgetService)
    return budgets


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidRequest(
            f"unknown budget kind '{kind[:40]}': use one of {', '.join(KINDS)}",
            param="kind",
            field="kind",
        )
    return kind


@router.put("/{kind}/{name}")
async def set_budget(
    kind: str,
    name: str,
    request: Request,
    plane: PlaneDep,
    actor: ActorDep,
    body: Any = _BODY,
) -> dict[str, Any]:
    """Set (replace) a scope's caps; enforced, with what was spent so far this day and
    month, before the answer returns."""
    _kind(kind)
    budgets = _budgets(plane)
    if not isinstance(body, dict):
        raise InvalidRequest(
            'the body must be a JSON object such as {"monthly_usd": "500"}',
            param="body",
            field="body",
        )

    def store() -> tuple[Any, Any]:
        with plane.db.session() as session:
            return service.set_budget(session, kind=kind, name=name, caps=body, actor=actor.name)

    before, after = await asyncio.to_thread(store)
    await budgets.refresh()
    await audit_change(
        plane,
        request,
        actor,
        action="budgets.set",
        target=f"budget:{kind}:{name}",
        before=before,
        after=after,
    )
    found = await budgets.status(kind)
    return next(
        (b for b in found if b["name"] == name),
        {"kind": kind, "name": name, "source": None, "daily": None, "monthly": None},
    )


@router.get("")
async def list_budgets(
    plane: PlaneDep, _: ActorDep, kind: str | None = None
) -> list[dict[str, Any]]:
    """Every budget (or those of one kind) with, per capped period: cap, spent, reserved by
    calls in flight, remaining, and when it resets (UTC)."""
    if kind is not None:
        _kind(kind)
    return await _budgets(plane).status(kind)


@router.delete("/{kind}/{name}")
async def delete_budget(
    kind: str, name: str, request: Request, plane: PlaneDep, actor: ActorDep
) -> dict[str, Any]:
    """Remove a scope's caps set through the API (an intent's endpoint budget stays)."""
    _kind(kind)
    budgets = _budgets(plane)

    def remove() -> Any:
        with plane.db.session() as session:
            return service.delete_budget(session, kind=kind, name=name)

    before = await asyncio.to_thread(remove)
    await budgets.refresh()
    await audit_change(
        plane,
        request,
        actor,
        action="budgets.delete",
        target=f"budget:{kind}:{name}",
        before=before,
    )
    return {"kind": kind, "name": name, "deleted": True}
