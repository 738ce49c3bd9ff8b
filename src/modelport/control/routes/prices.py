"""``/api/v1/prices``: the versioned price catalog (per-unit and hardware prices)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from modelport.control import prices as service
from modelport.control.deps import ActorDep, AdminDep, PlaneDep, SessionDep
from modelport.observability.pricing import format_usd
from modelport.store.tables import PriceRow

router = APIRouter(prefix="/prices", tags=["prices"])


class PriceSet(BaseModel):
    """Prices for one target (exactly one of ``endpoint``, ``model``, ``hardware``), as
    decimal USD strings by unit, in force from ``effective_from`` (default: now)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    model: str | None = Field(default=None, description="NAME:VERSION (or NAME@ALIAS)")
    hardware: str | None = None
    prices: dict[str, str] = Field(
        description='e.g. {"per_1k_rows": "0.002"}; hardware: {"per_hour": "0.50"}'
    )
    effective_from: datetime | None = None


class PricePublic(BaseModel):
    id: int
    kind: str
    target: str
    unit: str
    usd: str
    nanousd: int
    effective_from: datetime
    in_force: bool
    created_by: str
    created_at: datetime


def _public(rows: list[PriceRow], now: datetime) -> list[PricePublic]:
    # In force: the newest already started for its target and unit (rows come oldest first).
    current: dict[tuple[str, str, str], int] = {}
    for row in rows:
        if row.effective_from <= now:
            current[(row.kind, row.target, row.unit)] = row.id
    return [
        PricePublic(
            id=row.id,
            kind=row.kind,
            target=row.target,
            unit=row.unit,
            usd=format_usd(row.nanousd),
            nanousd=row.nanousd,
            effective_from=row.effective_from,
            in_force=current.get((row.kind, row.target, row.unit)) == row.id,
            created_by=row.created_by,
            created_at=row.created_at,
        )
        for row in rows
    ]


@router.post("", status_code=201)
async def set_prices(
    body: PriceSet, request: Request, plane: PlaneDep, actor: ActorDep
) -> list[PricePublic]:
    """Add prices; each is in force from ``effective_from`` until a newer one starts.
    Past times are refused: history is never repriced."""

    def store() -> list[PricePublic]:
        try:
            with plane.db.session() as session:
                rows = service.set_prices(session, **body.model_dump(), created_by=actor.name)
                # Into the book before the commit: an event answered after effective_from
                # and loaded before this call returns is priced with the new price, too.
                plane.prices.replace(service.load_prices(session))
                public = _public(rows, datetime.now(UTC))
        except Exception:
            service.refresh(plane.db, plane.prices)  # the commit failed: back to what is stored
            raise
        target = public[0].target if public else ""
        plane.audit.change(
            request.scope,
            actor,
            action="prices.set",
            target=f"price:{public[0].kind}:{target}" if public else "price:",
            after=[p.model_dump(mode="json") for p in public],
        )
        return public

    return await asyncio.to_thread(store)


@router.get("")
def list_prices(
    session: SessionDep,
    _: AdminDep,
    endpoint: str | None = None,
    model: str | None = None,
    hardware: str | None = None,
) -> list[PricePublic]:
    """Every price ever set (oldest first), or one target's; ``in_force`` marks today's."""
    rows = service.list_prices(session, endpoint=endpoint, model=model, hardware=hardware)
    return _public(rows, datetime.now(UTC))
