"""Loading the usage journal into the database: raw events, rollups, read offsets.

A dedicated thread reads each journal segment from the offset stored for it and, for every
batch of whole lines, in ONE transaction: inserts the events that are new (by their
gateway-made ``event_id``; ``ON CONFLICT DO NOTHING`` guards the rest), adds those same
events, and only those, to the minute, hour and day rollups (``ON CONFLICT DO UPDATE`` adds
the sums), and stores the new offset. A crash anywhere leaves either all of it or none, and
loading a line again never counts it twice. Segments the journal no longer writes are
deleted once read to their end; raw events older than the retention are deleted (rollups
are kept).
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from modelport.core.usage import UsageRecord
from modelport.observability.journal import complete_lines, is_written, iter_records, segments
from modelport.store import Database
from modelport.store.tables import (
    ROLLUP_DIMENSIONS,
    ROLLUP_SUMS,
    UsageEventRow,
    UsageOffsetRow,
    UsageRollupRow,
)

__all__ = ["GRANULARITIES", "UsageLoader", "bucket_start", "rollup_rows"]

log = logging.getLogger("modelport.usage")

#: Rollup granularities and their bucket length in seconds (days are UTC days).
GRANULARITIES = {"minute": 60, "hour": 3600, "day": 86400}
_ID_CHUNK = 500  # event ids per "which are new?" query: far below any bind limit
_RETENTION_EVERY_S = 60.0

CostOf = Callable[[UsageRecord], int]
LatencyTarget = Callable[[str], float | None]


def _no_cost(_record: UsageRecord) -> int:
    return 0


def _no_target(_endpoint: str) -> float | None:
    return None


def bucket_start(at: float, granularity: str) -> datetime:
    """The start of the ``granularity`` bucket holding unix time ``at`` (UTC)."""
    size = GRANULARITIES[granularity]
    return datetime.fromtimestamp(at - at % size, UTC)


def _limits() -> dict[str, int]:
    """Column lengths of the event table's strings: a longer value is cut, never refused
    (one odd customer id must not stop the loader)."""
    limits = {}
    for column in UsageEventRow.__table__.columns:
        length = getattr(column.type, "length", None)
        if isinstance(length, int):
            limits[column.name] = length
    return limits


_LIMITS = _limits()
_EVENTS: Table = UsageEventRow.__table__  # type: ignore[assignment]
_ROLLUPS: Table = UsageRollupRow.__table__  # type: ignore[assignment]
_OFFSETS: Table = UsageOffsetRow.__table__  # type: ignore[assignment]


def _cut(name: str, value: str) -> str:
    limit = _LIMITS.get(name)
    return value[:limit] if limit is not None else value


def event_row(record: UsageRecord, cost_nanousd: int) -> dict[str, Any]:
    """The ``usage_events`` row of one record."""
    units = record.units
    return {
        "event_id": _cut("event_id", record.event_id),
        "request_id": _cut("request_id", record.request_id),
        "at": datetime.fromtimestamp(record.at, UTC),
        "endpoint": _cut("endpoint", record.endpoint),
        "revision": _cut("revision", record.revision),
        "model": _cut("model", record.model),
        "model_version": record.model_version,
        "task": _cut("task", record.task),
        "key_id": _cut("key_id", record.key_id),
        "project": _cut("project", record.project),
        "team": _cut("team", record.team),
        "customer": _cut("customer", record.customer or ""),
        "status": record.status,
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
        "upstream_ms": record.upstream_ms,
        "requests": units.requests,
        "input_tokens": units.input_tokens,
        "output_tokens": units.output_tokens,
        "audio_seconds": units.audio_seconds,
        "images": units.images,
        "rows": units.rows,
        "streamed": record.streamed,
        "judged": record.judged,
        "cost_nanousd": cost_nanousd,
    }


def rollup_rows(
    events: Iterable[dict[str, Any]], latency_target_ms: LatencyTarget = _no_target
) -> list[dict[str, Any]]:
    """The minute, hour and day rollup rows that ``events`` (``event_row`` dicts) add up to.

    ``slo_requests`` counts judged calls that were not the client's fault (not 4xx);
    ``errors`` those of them that failed (5xx); ``slow`` those slower than their endpoint's
    p95 target, where it has one.

    Events are summed per minute first and the minutes then per hour and day: the loader
    runs beside the gateway in one interpreter, so its work per event is kept to one key and
    a few additions (a batch's events mostly share their minute and dimensions)."""
    targets: dict[str, float | None] = {}
    minutes: dict[tuple[Any, ...], list[Any]] = {}
    for event in events:
        status = event["status"]
        counted = event["judged"] and not 400 <= status < 500
        endpoint = event["endpoint"]
        if endpoint not in targets:
            targets[endpoint] = latency_target_ms(endpoint)
        target = targets[endpoint]
        adds = (  # in the order of ROLLUP_SUMS
            event["requests"],
            int(counted),
            int(counted and status >= 500),
            int(counted and target is not None and event["latency_ms"] > target),
            event["input_tokens"],
            event["output_tokens"],
            event["audio_seconds"],
            event["images"],
            event["rows"],
            event["latency_ms"],
            event["upstream_ms"],
            event["cost_nanousd"],
        )
        key = (int(event["at"].timestamp() // 60), *(event[n] for n in ROLLUP_DIMENSIONS))
        sums = minutes.get(key)
        if sums is None:
            minutes[key] = list(adds)
        else:
            for index, value in enumerate(adds):
                sums[index] += value
    rows = []
    for granularity, size in GRANULARITIES.items():
        per = minutes if size == 60 else _coarser(minutes, size // 60)
        starts: dict[int, datetime] = {}
        for (bucket, *dimensions), sums in per.items():
            start = starts.get(bucket)
            if start is None:
                start = starts[bucket] = datetime.fromtimestamp(bucket * size, UTC)
            row = {"granularity": granularity, "bucket_start": start}
            row.update(zip(ROLLUP_DIMENSIONS, dimensions, strict=True))
            row.update(zip(ROLLUP_SUMS, sums, strict=True))
            rows.append(row)
    return rows


def _coarser(
    minutes: dict[tuple[Any, ...], list[Any]], factor: int
) -> dict[tuple[Any, ...], list[Any]]:
    """Minute sums added up into buckets ``factor`` minutes long (UTC hours and days)."""
    coarse: dict[tuple[Any, ...], list[Any]] = {}
    for (minute, *dimensions), sums in minutes.items():
        key = (minute // factor, *dimensions)
        total = coarse.get(key)
        if total is None:
            coarse[key] = list(sums)
        else:
            for index, value in enumerate(sums):
                total[index] += value
    return coarse


def _insert(session: Session, table: Table) -> Any:
    """An INSERT that knows ``ON CONFLICT``: the dialect's own (SQLite or PostgreSQL). On the
    table, not the ORM class: the ORM's bulk path costs several times more per row."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"usage loading supports SQLite and PostgreSQL, not {dialect}")


def store_batch(
    session: Session,
    records: Sequence[UsageRecord],
    *,
    cost_of: CostOf = _no_cost,
    latency_target_ms: LatencyTarget = _no_target,
) -> int:
    """Store the events of ``records`` not stored yet and add them to the rollups; how many
    were new. Runs inside the caller's transaction."""
    fresh: dict[str, UsageRecord] = {}
    for record in records:
        fresh.setdefault(_cut("event_id", record.event_id), record)
    connection = session.connection()
    for event_id in _stored_ids(connection, list(fresh)):
        del fresh[event_id]
    if not fresh:
        return 0
    rows = [event_row(record, _priced(cost_of, record)) for record in fresh.values()]
    rollups = rollup_rows(rows, latency_target_ms)  # first: storing converts the rows
    _execute_many(connection, _insert(session, _EVENTS).on_conflict_do_nothing(), rows)
    upsert = _insert(session, _ROLLUPS)
    upsert = upsert.on_conflict_do_update(
        index_elements=["granularity", "bucket_start", *ROLLUP_DIMENSIONS],
        set_={name: _ROLLUPS.c[name] + upsert.excluded[name] for name in ROLLUP_SUMS},
    )
    _execute_many(connection, upsert, rollups)
    return len(rows)


def _stored_ids(connection: Connection, ids: list[str]) -> list[str]:
    """Which of ``ids`` the event table holds already. Plain SQL to the driver: building
    the same query through SQLAlchemy cost more than the loader's whole insert."""
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    found: list[str] = []
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        marks = ", ".join([mark] * len(chunk))
        query = f"SELECT event_id FROM usage_events WHERE event_id IN ({marks})"  # noqa: S608
        found.extend(row[0] for row in connection.exec_driver_sql(query, tuple(chunk)))
    return found


def _execute_many(connection: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """``statement`` once per row of ``rows``, compiled once and handed to the driver's own
    executemany. The rows' values are converted in place to what the driver takes.

    The loader shares the interpreter (and its lock) with the gateway: SQLAlchemy's generic
    executemany spends more time per row building parameters than the database spends
    storing it, so the columns' bind conversions are looked up once per batch here and the
    rows go to the driver as they are."""
    if not rows:
        return
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(rows[0]))
    names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
    convert = {}
    for name in names:
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            convert[name] = processor
    for name, processor in convert.items():  # in place: the rows are the loader's own
        for row in rows:
            row[name] = processor(row[name])
    if compiled.positional:
        pick = operator.itemgetter(*names)  # more than one name: a tuple per row
        connection.exec_driver_sql(compiled.string, [pick(row) for row in rows])
    else:
        connection.exec_driver_sql(compiled.string, rows)


def _priced(cost_of: CostOf, record: UsageRecord) -> int:
    try:
        return int(cost_of(record))
    except Exception:
        # A price book that cannot price one event must not stop usage from being stored.
        log.exception("could not price usage event %s; stored at cost 0", record.event_id)
        return 0


def _store_offset(session: Session, segment: str, offset: int) -> None:
    upsert = _insert(session, _OFFSETS)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["segment"], set_={"offset": upsert.excluded.offset}
        ),
        [{"segment": segment, "offset": offset}],
    )


class UsageLoader:
    """Loads the journal in ``directory`` into ``db`` every ``interval_s``.

    The server runs it in a process of its own (``control/usage_process.py``), so its work
    never holds the interpreter lock the gateway serves with; :meth:`start` runs it in a
    thread instead, for tests and tools. ``active_segment`` says whether a segment is still
    being written (a line past its last newline is left for the next pass, and it is never
    deleted); by default, whether a journal holds its lock.

    ``refresh``, if given, is called at the start of every pass to re-read what pricing and
    SLO counting need (prices, latency targets) from the database. Events are then stored
    only up to the time it was called: a price set later takes effect later (never in the
    past), so every stored event is priced with the prices of its own time.
    """

    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        active_segment: Callable[[Path], bool] = is_written,
        cost_of: CostOf = _no_cost,
        latency_target_ms: LatencyTarget = _no_target,
        refresh: Callable[[], None] | None = None,
        interval_s: float = 1.0,
        retention_days: float = 30.0,
        batch_bytes: int = 1024 * 1024,
    ) -> None:
        self.db = db
        self.directory = directory
        self.cost_of = cost_of
        self.latency_target_ms = latency_target_ms
        self._refresh = refresh
        self._horizon = float("inf")  # events after this wait for the next pass
        self._active = active_segment
        self._interval_s = interval_s
        self._retention = timedelta(days=retention_days)
        self._batch_bytes = batch_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one load at a time (the thread, or a test's call)
        self._pruned_at = 0.0

    def start(self) -> None:
        """Begin loading in the background."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="usage-loader", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop after one last load (blocking: call it from a thread when on the loop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.load_logged()
        self.load_logged()  # what was written up to shutdown

    def load_logged(self) -> None:
        """:meth:`load_once`, logging (not raising) a failure: the next pass retries."""
        try:
            self.load_once()
        except Exception:
            # The database may be down or locked for a while: the journal keeps the events
            # and the next pass resumes from the stored offsets.
            log.exception("loading the usage journal failed; retrying")

    def load_once(self) -> int:
        """Load every segment to its last whole line; how many new events were stored."""
        with self._lock:
            stored = 0
            if self._refresh is not None:
                # Taken before the refresh reads prices: one set after it takes effect after.
                self._horizon = time.time()
                self._refresh()
            with self.db.session() as session:
                offsets = {
                    row.segment: row.offset for row in session.scalars(select(UsageOffsetRow))
                }
            present = set()
            for segment in segments(self.directory):
                present.add(segment.name)
                stored += self._load_segment(segment, offsets.get(segment.name, 0))
            gone = [name for name in offsets if name not in present]
            now = time.time()
            if gone or now - self._pruned_at >= _RETENTION_EVERY_S:
                self._prune(gone, now)
            return stored

    def _load_segment(self, segment: Path, offset: int) -> int:
        # Decided before reading: a segment the journal has left gets no more lines, so what
        # is past its last newline then is a line torn by a crash, not one being written.
        finished = not self._active(segment)
        stored = 0
        tail = b""
        try:
            handle = segment.open("rb")
        except FileNotFoundError:
            return 0
        with handle:
            handle.seek(offset)
            while True:
                data = handle.read(self._batch_bytes)
                lines, used = complete_lines(data)
                if used == 0 and len(data) == self._batch_bytes:
                    # One line longer than a batch: no gateway writes such a line; skip it.
                    log.warning("skipping an over-long line in usage segment %s", segment.name)
                    used = len(data)
                if used == 0:
                    tail = data
                    break
                parsed = list(iter_records(lines))  # one per line, None for a bad one
                later = next(
                    (i for i, r in enumerate(parsed) if r is not None and r.at > self._horizon),
                    None,
                )
                if later is not None:  # newer than the prices read: the next pass takes them
                    parsed = parsed[:later]
                    used = sum(len(line) + 1 for line in lines[:later])
                    finished = False  # so the segment is not done with either
                if used:
                    records = [record for record in parsed if record is not None]
                    offset += used
                    try:
                        with self.db.session() as session:
                            stored += self._store(session, records)
                            _store_offset(session, segment.name, offset)
                    except Exception:
                        stored += self._store_one_by_one(records, segment.name, offset)
                if later is not None:
                    break
                handle.seek(offset)
        if finished:
            if tail:
                log.warning(
                    "usage segment %s ends in a torn line (the process was killed while "
                    "writing it); it is dropped",
                    segment.name,
                )
            segment.unlink(missing_ok=True)
            with self.db.session() as session:
                session.execute(
                    delete(UsageOffsetRow).where(UsageOffsetRow.segment == segment.name)
                )
        return stored

    def _store(self, session: Session, records: Sequence[UsageRecord]) -> int:
        return store_batch(
            session, records, cost_of=self.cost_of, latency_target_ms=self.latency_target_ms
        )

    def _store_one_by_one(self, records: Sequence[UsageRecord], segment: str, offset: int) -> int:
        """A batch the database refused: if the database is there, one of its records is
        unstorable (a number too large...): store the others one by one, skip that one, and
        move on; a poison line must not hold up every line after it."""
        with self.db.session() as session:
            session.execute(select(1))  # down or locked: raises, and the batch is retried
        stored = 0
        for record in records:
            try:
                with self.db.session() as session:
                    stored += self._store(session, [record])
            except Exception:
                log.exception("skipping usage event %s: the database refuses it", record.event_id)
        with self.db.session() as session:
            _store_offset(session, segment, offset)
        return stored

    def _prune(self, gone: list[str], now: float) -> None:
        """Forget offsets of deleted segments; delete raw events past the retention."""
        with self.db.session() as session:
            if gone:
                session.execute(delete(UsageOffsetRow).where(UsageOffsetRow.segment.in_(gone)))
            if now - self._pruned_at >= _RETENTION_EVERY_S:
                cutoff = datetime.fromtimestamp(now, UTC) - self._retention
                session.execute(delete(UsageEventRow).where(UsageEventRow.at < cutoff))
        if now - self._pruned_at >= _RETENTION_EVERY_S:
            self._pruned_at = now
