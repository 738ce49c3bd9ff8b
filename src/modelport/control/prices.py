"""The price catalog: set and list versioned prices; load them into the ``PriceBook``.

A price is set for exactly one target: an endpoint, a model version (``name:3``; an alias
``name@champion`` names the version it points to when the price is set) or a hardware type.
Unit prices of an endpoint win over its model version's, unit by unit. Prices are never
changed: setting one adds a row in force from ``effective_from`` (now by default, never in
the past), so every past event keeps the price it was charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import endpoints as endpoint_service
from modelport.control import registry
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.names import check_name, parse_model_ref
from modelport.observability.pricing import (
    HARDWARE_UNIT,
    UNIT_PRICES,
    Price,
    PriceBook,
    parse_usd,
)
from modelport.store import Database
from modelport.store.tables import PriceRow

__all__ = ["list_prices", "load_prices", "refresh", "resolve_target", "set_prices"]

_KINDS = ("endpoint", "model", "hardware")


def resolve_target(
    session: Session, *, endpoint: str | None, model: str | None, hardware: str | None
) -> tuple[str, str]:
    """``(kind, target)`` of the one target given; 400 unless exactly one, 404 if unknown."""
    given = {k: v for k, v in zip(_KINDS, (endpoint, model, hardware), strict=True) if v}
    if len(given) != 1:
        raise InvalidRequest(
            "give exactly one of 'endpoint', 'model' (NAME:VERSION) or 'hardware' to price",
            param="endpoint" if not given else sorted(given)[1],
        )
    if endpoint:
        try:
            return "endpoint", endpoint_service.get_endpoint(session, endpoint).name
        except NotFound as exc:
            raise NotFound(exc.message, param="endpoint") from None
    if model:
        return "model_version", _model_version(session, model)
    assert hardware is not None
    try:
        return "hardware", check_name("hardware", hardware.strip().lower())
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="hardware") from None


def _model_version(session: Session, ref: str) -> str:
    name, at, rest = ref.partition("@")
    if at and rest.isascii() and rest.isdigit():  # name@3: version 3, as the docs write it
        ref = f"{name}:{rest}"
    try:
        parsed = parse_model_ref(ref)
        if parsed.version is None and parsed.alias is None:
            raise InvalidRequest(
                f"price a model version, not a whole model: give '{ref}:VERSION'", param="model"
            )
        version = registry.resolve(session, parsed)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="model") from None
    except NotFound as exc:
        raise NotFound(exc.message, param="model") from None
    return f"{version.model.name}:{version.version}"


def set_prices(
    session: Session,
    *,
    endpoint: str | None = None,
    model: str | None = None,
    hardware: str | None = None,
    prices: Mapping[str, str],
    effective_from: datetime | None = None,
    created_by: str = "",
    now: datetime | None = None,
) -> list[PriceRow]:
    """Add one price per unit in ``prices`` (decimal USD strings) for one target, all in
    force from ``effective_from``. Every check runs before anything is stored."""
    kind, target = resolve_target(session, endpoint=endpoint, model=model, hardware=hardware)
    allowed = (HARDWARE_UNIT,) if kind == "hardware" else tuple(UNIT_PRICES)
    if not prices:
        raise InvalidRequest(f"give at least one price, e.g. {allowed[0]}", param="prices")
    amounts = {}
    for unit, text in prices.items():
        if unit not in allowed:
            raise InvalidRequest(
                f"unknown unit '{unit}' for a {kind.replace('_', ' ')}: use one of "
                f"{', '.join(allowed)}",
                param=f"prices.{unit}",
            )
        try:
            amounts[unit] = parse_usd(text)
        except ValueError as exc:
            raise InvalidRequest(f"price '{unit}' {exc}", param=f"prices.{unit}") from None
    now = now or datetime.now(UTC)
    start = now if effective_from is None else _aware(effective_from)
    if start < now:
        raise InvalidRequest(
            f"effective_from {start.isoformat()} is in the past: prices cannot change history; "
            "leave it out to start now, or give a future time",
            param="effective_from",
        )
    rows = [
        PriceRow(
            kind=kind,
            target=target,
            unit=unit,
            nanousd=nano,
            effective_from=start,
            created_by=created_by,
            created_at=now,
        )
        for unit, nano in amounts.items()
    ]
    session.add_all(rows)
    session.flush()
    return rows


def _aware(moment: datetime) -> datetime:
    # A time without a zone is read as UTC, as everything Modelport stores is.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def list_prices(
    session: Session,
    *,
    endpoint: str | None = None,
    model: str | None = None,
    hardware: str | None = None,
) -> list[PriceRow]:
    """Every price (all versions), or those of one target; oldest first."""
    query = select(PriceRow).order_by(PriceRow.effective_from, PriceRow.id)
    if endpoint or model or hardware:
        kind, target = resolve_target(session, endpoint=endpoint, model=model, hardware=hardware)
        query = query.where(PriceRow.kind == kind, PriceRow.target == target)
    return list(session.scalars(query))


def load_prices(session: Session) -> list[Price]:
    """The whole catalog, as the ``PriceBook`` holds it (in the order the prices were set)."""
    rows = session.scalars(select(PriceRow).order_by(PriceRow.id))
    return [
        Price(row.kind, row.target, row.unit, row.nanousd, row.effective_from.timestamp())
        for row in rows
    ]


def refresh(db: Database, book: PriceBook) -> None:
    """Load the whole catalog into ``book``: call after every change to prices."""
    with db.session() as session:
        book.replace(load_prices(session))
