"""Rate limits as the control plane keeps them: rows set through the API, plus the
``limits`` of each endpoint's intent, published to the gateway as one immutable table.

An endpoint limited both by its intent and through the API gets the tighter of the two,
field by field: the intent is what its owners declared, the API what operators add on top.
The gateway never reads the database for a request: every change here ends in
:meth:`LimitBook.refresh`, which builds a fresh :class:`LimitTable` and hands it to the
guards (like routes and keys).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.core.errors import InvalidRequest, NotFound
from modelport.governance.rate_limits import FIELDS, KINDS, Limit, LimitTable
from modelport.store import Database
from modelport.store.identity_tables import ProjectRow, TeamRow
from modelport.store.limit_tables import LimitRow
from modelport.store.tables import ApiKeyRow, EndpointRow, utcnow

__all__ = ["LimitBook", "LimitPublic", "delete_limit", "list_limits", "set_limit"]

_MAX_NAME = 140
_MAX_VALUE = 2**31 - 1  # an INTEGER column on every database


class LimitPublic(BaseModel):
    """One scope's limits; ``source`` says where they were set (``api`` or ``intent``)."""

    kind: str
    name: str
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    source: str
    updated_by: str = ""
    updated_at: datetime | None = None


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidRequest(
            f"kind must be one of {', '.join(KINDS)}, not {kind!r}", field="kind", param="kind"
        )
    return kind


def _check_value(field: str, value: object) -> int | None:
    # The route's model checks these too; the service does not trust its callers.
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_VALUE:
        raise InvalidRequest(
            f"{field} must be a positive integer (at most {_MAX_VALUE}) or null",
            field=field,
            param=field,
        )
    return value


def _check_target(session: Session, kind: str, name: str) -> None:
    """A limit on something that does not exist is a mistake (a typo); customers are the
    callers' own names, so any name is one."""
    if not name or len(name) > _MAX_NAME:
        raise InvalidRequest(f"name must be 1 to {_MAX_NAME} characters", field="name")
    column: Any = {
        "key": ApiKeyRow.id,
        "project": ProjectRow.name,
        "team": TeamRow.name,
        "endpoint": EndpointRow.name,
    }.get(kind)
    if column is not None and session.scalar(select(column).where(column == name)) is None:
        raise NotFound(f"{kind} '{name}' does not exist", field="name")


def _public(row: LimitRow) -> LimitPublic:
    return LimitPublic(
        kind=row.kind,
        name=row.name,
        rpm=row.rpm,
        tpm=row.tpm,
        concurrency=row.concurrency,
        source="api",
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


def set_limit(
    session: Session,
    kind: str,
    name: str,
    *,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    actor: str,
) -> tuple[LimitPublic | None, LimitPublic]:
    """Set (replace) the limits of one scope; the limits before (None: none) and after."""
    check_kind(kind)
    values = {
        "rpm": _check_value("rpm", rpm),
        "tpm": _check_value("tpm", tpm),
        "concurrency": _check_value("concurrency", concurrency),
    }
    if all(v is None for v in values.values()):
        raise InvalidRequest(
            "set at least one of rpm, tpm, concurrency (to remove limits, DELETE them)",
            field="rpm",
        )
    _check_target(session, kind, name)
    row = session.scalar(select(LimitRow).where(LimitRow.kind == kind, LimitRow.name == name))
    before = _public(row) if row is not None else None
    if row is None:
        row = LimitRow(kind=kind, name=name)
        session.add(row)
    row.rpm, row.tpm, row.concurrency = values["rpm"], values["tpm"], values["concurrency"]
    row.updated_by = actor[:128]
    row.updated_at = utcnow()
    session.flush()
    return before, _public(row)


def delete_limit(session: Session, kind: str, name: str) -> LimitPublic:
    """Remove the limits set through the API on one scope (an intent's stay); what they were."""
    check_kind(kind)
    row = session.scalar(select(LimitRow).where(LimitRow.kind == kind, LimitRow.name == name))
    if row is None:
        raise NotFound(f"no limits are set on {kind} '{name}'", field="name")
    before = _public(row)
    session.delete(row)
    return before


def _intent_limits(session: Session) -> list[LimitPublic]:
    found = []
    rows = session.execute(select(EndpointRow.name, EndpointRow.intent).order_by(EndpointRow.name))
    for name, intent in rows:
        declared = (intent or {}).get("limits") or {}
        values = {f: declared.get(f) for f in FIELDS}
        if any(isinstance(v, int) for v in values.values()):
            found.append(LimitPublic(kind="endpoint", name=name, source="intent", **values))
    return found


def list_limits(session: Session, kind: str | None = None) -> list[LimitPublic]:
    """Every limit, API-set and from intents, by kind then name."""
    if kind is not None:
        check_kind(kind)
    query = select(LimitRow).order_by(LimitRow.kind, LimitRow.name)
    found = [_public(row) for row in session.scalars(query)]
    found += _intent_limits(session)
    if kind is not None:
        found = [limit for limit in found if limit.kind == kind]
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda limit: (order[limit.kind], limit.name, limit.source))


def table_of(limits: list[LimitPublic]) -> LimitTable:
    """The gateway's table: per scope, the tightest of what was set on it."""
    merged: dict[tuple[str, str], Limit] = {}
    for public in limits:
        limit = Limit(public.rpm, public.tpm, public.concurrency)
        scope = (public.kind, public.name)
        merged[scope] = merged[scope].tightest(limit) if scope in merged else limit
    return LimitTable(merged)


class LimitBook:
    """Publishes the limits to whoever enforces them (the gateway's guards)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = LimitTable()
        self._subscribers: list[Callable[[LimitTable], None]] = []
        # Refreshes one at a time: a slow older read must not be published after a newer one.
        self._lock = asyncio.Lock()

    def subscribe(self, publish: Callable[[LimitTable], None]) -> None:
        self._subscribers.append(publish)
        publish(self.table)

    def _read(self) -> LimitTable:
        with self.db.session() as session:
            return table_of(list_limits(session))

    async def refresh(self) -> LimitTable:
        """Read every limit and publish the table (after any change, and at start)."""
        async with self._lock:
            table = await asyncio.to_thread(self._read)
            self.table = table
            for publish in self._subscribers:
                publish(table)
        return table
