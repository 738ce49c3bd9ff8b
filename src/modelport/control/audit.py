"""The audit log in the database: appends, denied-access batches, anchoring, reads, verify.

``record`` appends one entry in its own transaction (a blocking write: routes call it from
their worker thread after the change has succeeded). ``denied`` is called on the event loop
(the control guard, the gateway) and must not block: it queues the entry and a background
thread writes the queue in batches. The same thread copies the chain head outside the
database every ``audit_anchor_interval_s`` when it moved (see ``anchors.py``).

Appends from several processes (two servers on one PostgreSQL) are serialised by updating
the one head row first, in the entry's own transaction: its row lock (PostgreSQL) or the
write lock (SQLite) is held until commit, so each append reads the head the one before it
wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelport.control.audit_anchors import AnchorSink, anchor_sink
from modelport.core.errors import Unavailable
from modelport.core.settings import Settings
from modelport.governance.audit_chain import (
    GENESIS,
    Anchor,
    Entry,
    Verification,
    digest,
    seal,
    verify,
)
from modelport.store import Database
from modelport.store.audit_tables import AuditEntryRow, AuditHeadRow
from modelport.store.tables import utcnow

__all__ = ["AuditFilter", "AuditLog", "Named", "entry_dict", "origin"]

log = logging.getLogger("modelport.audit")

# Denied accesses waiting for the writer. Bounded: a flood of 401s must not grow memory
# without end; what does not fit is counted (``dropped``) and logged, not stored.
_QUEUE_LIMIT = 10_000
_BATCH = 500
_FLUSH_S = 0.5  # how long a denied access waits, at most, before it is written
_DETAIL_CHARS = 500
_SIZES = {"actor": 255, "action": 64, "target": 255, "request_id": 128, "source": 64}


class Named(Protocol):
    """Who acted: ``governance.identity.Actor`` (only its name and kind are recorded)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in '.': "rollouts."
    target: str | None = None
    since: datetime | None = None
    after_seq: int = 0  # for paging: entries after this one
    limit: int | None = 100


@dataclass(frozen=True, slots=True)
class _Denied:
    at: datetime
    actor: str
    action: str
    target: str
    request_id: str
    source: str
    reason: str


class AuditLog:
    """Appends to, reads and verifies the audit log (see the module docstring)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.sink: AnchorSink | None = anchor_sink(settings)
        self.anchor_interval_s = settings.audit_anchor_interval_s
        self.dropped = 0  # denied accesses not stored because the queue was full
        self._queue: deque[_Denied] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._anchored: Anchor | None = None

    # -- writing ------------------------------------------------------------------------------

    def record(
        self,
        *,
        actor: Named,
        action: str,
        target: str,
        request_id: str = "",
        source: str = "",
        before: Any = None,
        after: Any = None,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry (blocking: call it in a thread, after the change succeeded).
        ``before``/``after`` are JSON-able views of the target; only their digests are kept."""
        with self.db.session() as session:
            self._append(
                session,
                [
                    {
                        "at": utcnow(),
                        "actor": actor.name,
                        "action": action,
                        "target": target,
                        "request_id": request_id,
                        "source": source,
                        "before": digest(before),
                        "after": digest(after),
                        "outcome": outcome,
                        "details": details or {},
                    }
                ],
            )

    def change(
        self,
        scope: Mapping[str, Any],
        actor: Named,
        *,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record a change a request made (blocking: from the route's worker thread, after
        the change succeeded), with the request's id and source address. The change is
        committed already, so a failed write is logged (with the entry) rather than turned
        into an error answer that would claim it did not happen."""
        request_id, source = origin(scope)
        try:
            self.record(
                actor=actor,
                action=action,
                target=target,
                request_id=request_id,
                source=source,
                before=before,
                after=after,
                details=details,
            )
        except Exception:
            log.exception(
                "audit entry not stored: actor=%s action=%s target=%s request_id=%s source=%s",
                actor.name,
                action,
                target,
                request_id,
                source,
            )

    def denied(
        self,
        *,
        actor_name: str,
        action: str,
        target: str,
        request_id: str,
        source: str,
        reason: str,
    ) -> None:
        """Queue a refused access (non-blocking: safe on the event loop); written in batches."""
        if len(self._queue) >= _QUEUE_LIMIT:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("audit queue full: %d denied accesses not recorded", self.dropped)
            return
        actor = actor_name or "anonymous"  # refused before anyone was recognised
        self._queue.append(_Denied(utcnow(), actor, action, target, request_id, source, reason))
        if len(self._queue) >= _BATCH:
            self._wake.set()

    def flush(self) -> int:
        """Write every queued denied access now (blocking); returns how many were written."""
        written = 0
        while self._queue:
            batch: list[_Denied] = []
            while self._queue and len(batch) < _BATCH:
                batch.append(self._queue.popleft())
            with self.db.session() as session:
                self._append(
                    session,
                    [
                        {
                            "at": item.at,
                            "actor": item.actor,
                            "action": item.action,
                            "target": item.target,
                            "request_id": item.request_id,
                            "source": item.source,
                            "outcome": "denied",
                            "details": {"reason": item.reason[:_DETAIL_CHARS]},
                        }
                        for item in batch
                    ],
                )
            written += len(batch)
        return written

    def _append(self, session: Session, items: list[dict[str, Any]]) -> None:
        """Chain ``items`` (Entry fields but seq and the hashes) after the head, in one
        transaction: three statements however many there are."""
        # Move the head before reading it: the update takes the lock that serialises every
        # append (PostgreSQL: the row; SQLite: the database), so ``prev`` is the newest hash.
        head = session.execute(
            update(AuditHeadRow)
            .where(AuditHeadRow.id == 1)
            .values(seq=AuditHeadRow.seq + len(items))
            .returning(AuditHeadRow.seq, AuditHeadRow.hash)
        ).one()
        seq, prev = head.seq - len(items), head.hash
        rows = []
        for item in items:
            for name, size in _SIZES.items():  # the columns' sizes (PostgreSQL refuses more)
                item[name] = str(item[name])[:size]
            # Details as JSON will read them back (NaN becomes null, keys strings), so that
            # the hash sealed now is the hash recomputed from the stored row.
            item["details"] = orjson.loads(
                orjson.dumps(item["details"], option=orjson.OPT_NON_STR_KEYS, default=str)
            )
            seq += 1
            entry = seal(Entry(seq=seq, **item), prev)
            rows.append(_row(entry))
            prev = entry.hash
        session.execute(insert(AuditEntryRow), rows)
        session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(hash=prev))

    # -- reading ------------------------------------------------------------------------------

    def entries(self, session: Session, query: AuditFilter, *, newest: bool = False) -> list[Entry]:
        """Entries matching ``query``, oldest first: the first ``limit`` after ``after_seq``,
        or (``newest``) the last ``limit``."""
        stmt = select(AuditEntryRow).where(AuditEntryRow.seq > query.after_seq)
        if query.actor:
            stmt = stmt.where(AuditEntryRow.actor == query.actor)
        if query.action:
            if query.action.endswith("."):
                stmt = stmt.where(AuditEntryRow.action.startswith(query.action, autoescape=True))
            else:
                stmt = stmt.where(AuditEntryRow.action == query.action)
        if query.target:
            stmt = stmt.where(AuditEntryRow.target == query.target)
        if query.since:
            stmt = stmt.where(AuditEntryRow.at >= query.since)
        stmt = stmt.order_by(AuditEntryRow.seq.desc() if newest else AuditEntryRow.seq)
        if query.limit is not None:
            stmt = stmt.limit(query.limit)
        found = [_entry(row) for row in session.execute(stmt.with_only_columns(*_COLUMNS))]
        return found[::-1] if newest else found

    def stream(self, query: AuditFilter, page: int = 1000) -> Iterator[Entry]:
        """Every entry matching ``query`` (its limit ignored), read a page at a time, each
        page in its own short transaction: an export of any size holds no lock for long and
        never the whole log in memory."""
        after = query.after_seq
        while True:
            with self.db.session() as session:
                batch = self.entries(
                    session,
                    AuditFilter(
                        actor=query.actor,
                        action=query.action,
                        target=query.target,
                        since=query.since,
                        after_seq=after,
                        limit=page,
                    ),
                )
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].seq

    def head(self) -> Anchor:
        with self.db.session() as session:
            row = session.get(AuditHeadRow, 1)
            if row is None:
                return Anchor(0, GENESIS)
            return Anchor(row.seq, row.hash)

    def anchors(self) -> list[Anchor]:
        """The anchors the configured file holds (none for a webhook: its receiver has them).
        A damaged file is a 503 naming the line: the chain cannot be vouched for without it."""
        try:
            return self.sink.read() if self.sink is not None else []
        except (ValueError, OSError) as exc:
            raise Unavailable(f"the audit anchors cannot be read: {exc}") from exc

    def verify(self, anchors: Sequence[Anchor] | None = None) -> Verification:
        """Recompute the whole chain and check it against the head row and the anchors (the
        configured anchor file's, unless ``anchors`` are given)."""
        if anchors is None:
            anchors = self.anchors()
        before = self.head()
        return verify(
            self.stream(AuditFilter(limit=None)), anchors, head=before, head_now=self.head
        )

    # -- the background thread --------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that writes denied accesses and anchors the head."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modelport-audit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after a last flush and anchor (blocking)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)

    def _run(self) -> None:
        last_anchor = 0.0
        clock: Callable[[], float] = time.monotonic
        while True:
            self._wake.wait(_FLUSH_S)
            self._wake.clear()
            stopping = self._stop.is_set()  # after the wait: close() wakes it to stop now
            try:
                self.flush()
                if self.sink is not None and (
                    stopping or clock() - last_anchor >= self.anchor_interval_s
                ):
                    last_anchor = clock()
                    self.anchor()
            except Exception:  # the database or the anchor target away: retried next time
                log.exception("audit: writing denied accesses or anchoring failed")
            if stopping:
                return

    def anchor(self) -> Anchor | None:
        """Copy the chain head outside the database if it moved since the last copy; returns
        what was written (None: the head had not moved, or no anchor is configured)."""
        if self.sink is None:
            return None
        if self._anchored is None:
            try:
                self._anchored = self.sink.last()
            except ValueError:  # a damaged anchor file: verify says so; keep anchoring
                log.exception("audit: the anchor file cannot be read")
        head = self.head()
        if head.seq == 0 or (self._anchored is not None and self._anchored.seq == head.seq):
            return None
        anchor = Anchor(head.seq, head.hash, utcnow().isoformat(timespec="seconds"))
        self.sink.write(anchor)
        self._anchored = anchor
        return anchor


def origin(scope: Mapping[str, Any]) -> tuple[str, str]:
    """A request's id and source address: the ones the control guard put on
    ``scope["state"]``, else the ``x-request-id`` header and the peer address."""
    state = scope.get("state") or {}
    request_id = str(state.get("request_id") or "")
    if not request_id:
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
                break
    client = scope.get("client")
    return request_id, str(client[0]) if client else ""


def entry_dict(entry: Entry) -> dict[str, Any]:
    """An entry as the API and the export show it (its hash included: anyone holding an
    export can verify it)."""
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "request_id": entry.request_id,
        "source": entry.source,
        "before": entry.before,
        "after": entry.after,
        "outcome": entry.outcome,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


# Entry's fields are the table's columns, in the same order: rows are read as plain tuples
# (no ORM objects: verify reads every entry) and written as dicts.
_FIELDS = [f.name for f in fields(Entry)]
_COLUMNS = [AuditEntryRow.__table__.c[name] for name in _FIELDS]


def _row(entry: Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in _FIELDS}


def _entry(row: Any) -> Entry:
    return Entry(*row)
