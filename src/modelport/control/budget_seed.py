"""What a budget's scope spent in a period before its ledger line was created: the seed.

A ledger line counts every call settled from its ``since`` on; the seed is everything the
period's calls metered *before* ``since`` cost, wherever those calls are now:

- loaded: in the usage rollups (day buckets for the whole days before ``since``, hour
  buckets for the whole hours of its day, minute buckets for the whole minutes of its
  hour) and the raw events (from the start of ``since``'s minute up to ``since``);
- journaled but not loaded yet (a restart right after a burst, a loader that is behind or
  was killed): in the journal's segment files, priced here with the same price book the
  loader prices them with.

The window between the last load and a restart: the segments are read first, and only then
the database, in ONE statement (one snapshot on SQLite and PostgreSQL alike), which also
returns the ids of the stored events as old as the oldest journaled one. The loader stores
an event, adds it to the rollups and moves its offset in one transaction, and deletes a
segment only after that, so every event before ``since`` is either in that snapshot (and
counted from it, its journal line skipped by id) or still in a segment read before it
(counted from the journal): never both, never neither.

Blocking: the control plane calls it in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, union_all

from modelport.core.usage import UsageRecord
from modelport.governance.budgets import current_period
from modelport.observability.journal import complete_lines, iter_records, segments
from modelport.store import Database
from modelport.store.tables import UsageEventRow, UsageRollupRow

__all__ = ["spent_before"]

log = logging.getLogger("modelport.budgets")

_ROLLUPS = UsageRollupRow.__table__
_EVENTS = UsageEventRow.__table__
#: The budget kinds and the usage column each is matched on.
_COLUMNS = {
    "key": "key_id",
    "project": "project",
    "team": "team",
    "customer": "customer",
    "endpoint": "endpoint",
}
_DIMENSIONS = tuple(_COLUMNS.values())
Spent = dict[tuple[str, str, str], int]  # (kind, name, period) -> nano-USD


def _journaled(directory: Path | None, start: float, since: float) -> list[UsageRecord]:
    """The journal's events in ``[start, since)``, read from every segment on disk."""
    found: list[UsageRecord] = []
    if directory is None:
        return found
    for segment in segments(directory):
        try:
            data = segment.read_bytes()
        except FileNotFoundError:  # loaded to its end and deleted meanwhile: in the database
            continue
        lines, _ = complete_lines(data)
        for record in iter_records(lines):
            if record is not None and start <= record.at < since:
                found.append(record)
    return found


def _at(value: Any) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def spent_before(
    db: Database,
    journal: Path | None,
    cost_of: Callable[[UsageRecord], int],
    scopes: Iterable[tuple[str, str]],
    since_us: int,
) -> Spent:
    """What each ``(kind, name)`` in ``scopes`` spent in the day and the month holding
    ``since_us`` (unix microseconds) before it, by ``(kind, name, period)``."""
    wanted = set(scopes)
    since = since_us / 1_000_000
    month = current_period("monthly", since)
    day = current_period("daily", since)
    records = _journaled(journal, month.start, since)
    since_at = datetime.fromtimestamp(since_us // 1_000_000, UTC).replace(
        microsecond=since_us % 1_000_000
    )
    day_start = datetime.fromtimestamp(day.start, UTC)
    hour = since_at.replace(minute=0, second=0, microsecond=0)
    minute = since_at.replace(second=0, microsecond=0)
    oldest = min((r.at for r in records), default=since)
    ids_from = max(datetime.fromtimestamp(month.start, UTC), min(minute, _utc(oldest)))
    r, e = _ROLLUPS.c, _EVENTS.c
    rolled = (
        select(
            literal("r").label("source"),
            r.bucket_start.label("at"),
            *(r[name] for name in _DIMENSIONS),
            func.sum(r.cost_nanousd).label("cost"),
            literal("").label("event_id"),
        )
        .where(
            or_(
                and_(
                    r.granularity == "day",
                    r.bucket_start >= datetime.fromtimestamp(month.start, UTC),
                    r.bucket_start < day_start,
                ),
                and_(r.granularity == "hour", r.bucket_start >= day_start, r.bucket_start < hour),
                and_(r.granularity == "minute", r.bucket_start >= hour, r.bucket_start < minute),
            )
        )
        .group_by(r.bucket_start, *(r[name] for name in _DIMENSIONS))
    )
    raw = select(
        literal("e").label("source"),
        e.at.label("at"),
        *(e[name] for name in _DIMENSIONS),
        e.cost_nanousd.label("cost"),
        e.event_id.label("event_id"),
    ).where(e.at >= ids_from, e.at < since_at)
    spent: Spent = {}
    stored: set[str] = set()
    with db.session() as session:
        # One statement: one snapshot of rollups and events (see the module's docstring).
        rows = session.execute(union_all(rolled, raw)).all()
    for row in rows:
        at = _at(row.at)
        if row.source == "e":
            stored.add(row.event_id)
            if at < minute:  # before the minute: the rollups counted it
                continue
        _add(
            spent,
            wanted,
            (getattr(row, name) for name in _DIMENSIONS),
            int(row.cost or 0),
            at >= day_start,
        )
    for record in records:
        if record.event_id in stored:
            continue
        try:
            cost = int(cost_of(record))
        except Exception:  # as the loader does: an unpriceable event costs 0
            log.exception("could not price journaled event %s for a budget", record.event_id)
            continue
        values = (record.key_id, record.project, record.team, record.customer, record.endpoint)
        _add(spent, wanted, iter(values), cost, record.at >= day.start)
    return spent


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC).replace(second=0, microsecond=0)


def _add(
    spent: Spent, wanted: set[tuple[str, str]], values: Iterator[Any], cost: int, today: bool
) -> None:
    if not cost:
        return
    for kind, value in zip(_COLUMNS, values, strict=True):
        if (kind, value) in wanted:
            spent[(kind, value, "monthly")] = spent.get((kind, value, "monthly"), 0) + cost
            if today:
                spent[(kind, value, "daily")] = spent.get((kind, value, "daily"), 0) + cost
