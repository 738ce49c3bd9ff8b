"""The audit log's hash chain: canonical bytes of an entry, its hash, and verification.

Pure logic (no database). Each entry's hash covers its own fields and the hash of the entry
before it, so changing, inserting or removing one stored entry breaks the chain from there
on. A chain rewritten from some entry onwards with every hash recomputed is consistent in
itself; only a copy of the head kept elsewhere (an *anchor*: seq and hash, written outside
the database) tells it apart, and the same anchors catch a tail cut off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

__all__ = [
    "GENESIS",
    "Anchor",
    "Entry",
    "Problem",
    "ProblemKind",
    "Verification",
    "canonical",
    "digest",
    "entry_hash",
    "seal",
    "verify",
]

GENESIS = "0" * 64  # what the first entry names as the hash before it

ProblemKind = Literal["altered", "inserted", "removed", "truncated"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit entry as stored. ``before``/``after`` are digests (see ``digest``)."""

    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    request_id: str = ""
    source: str = ""
    before: str = ""
    after: str = ""
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""


@dataclass(frozen=True, slots=True)
class Anchor:
    """A chain head copied outside the database at some time."""

    seq: int
    hash: str
    at: str = ""


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    kind: ProblemKind
    message: str


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    first_problem: Problem | None = None


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def digest(value: Any) -> str:
    """sha256 of a JSON-able value's canonical JSON; "" for None (nothing before/after)."""
    if value is None:
        return ""
    return hashlib.sha256(_json(value)).hexdigest()


def _timestamp(at: datetime) -> str:
    # Microseconds are what both SQLite and PostgreSQL keep: the text hashed must survive the
    # round trip through either.
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(entry: Entry) -> bytes:
    """The bytes an entry's hash covers: every field but the hash, as canonical JSON."""
    return _json(
        [
            entry.seq,
            _timestamp(entry.at),
            entry.actor,
            entry.action,
            entry.target,
            entry.request_id,
            entry.source,
            entry.before,
            entry.after,
            entry.outcome,
            entry.details,
            entry.prev_hash,
        ]
    )


def entry_hash(entry: Entry) -> str:
    """The hash an entry must carry: sha256 over its canonical bytes (which hold prev_hash)."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def seal(entry: Entry, prev_hash: str) -> Entry:
    """``entry`` chained after an entry whose hash is ``prev_hash``, with its hash set."""
    chained = replace(entry, prev_hash=prev_hash, hash="")
    return replace(chained, hash=entry_hash(chained))


def verify(
    entries: Iterable[Entry],
    anchors: Sequence[Anchor] = (),
    *,
    head: Anchor | None = None,
    head_now: Callable[[], Anchor | None] | None = None,
) -> Verification:
    """Recompute the chain over ``entries`` (in seq order) and check it against ``anchors``
    (copies of the head kept outside the database) and the head row stored with the log,
    which every append moves in the same transaction: ``head`` read before the entries (a
    log ending before it was truncated) and ``head_now`` read after them (an entry beyond it
    was not appended by the log; defaults to ``head``). Names the first entry altered,
    inserted or removed, or the tail truncated. Reads ``entries`` once, one ahead: a log of
    any length is checked in constant memory."""
    by_seq = {head.seq: head} if head is not None else {}
    by_seq.update((a.seq, a) for a in anchors)
    later: list[Anchor | None] = []

    def head_after() -> Anchor | None:
        if not later:
            later.append(head_now() if head_now is not None else head)
        return later[0]

    prev_hash, expected, checked = GENESIS, 1, 0
    last: Entry | None = None
    for entry, following in _lookahead(iter(entries)):
        problem = _check_entry(entry, following, last, prev_hash, expected, head_after)
        if problem is None:
            anchor = by_seq.get(entry.seq)
            if anchor is not None and anchor.hash != entry.hash:
                problem = Problem(
                    entry.seq,
                    "altered",
                    f"the chain up to entry {entry.seq} was rewritten: its hash differs from "
                    f"the one anchored{' at ' + anchor.at if anchor.at else ''}",
                )
        if problem is not None:
            return Verification(ok=False, checked=checked, first_problem=problem)
        checked += 1
        prev_hash, expected, last = entry.hash, entry.seq + 1, entry
    problem = _check_tail(last, [*anchors, *([head] if head is not None else [])], head_after())
    return Verification(ok=problem is None, checked=checked, first_problem=problem)


def _check_entry(
    entry: Entry,
    following: Entry | None,
    last: Entry | None,
    prev_hash: str,
    expected: int,
    head_after: Callable[[], Anchor | None],
) -> Problem | None:
    if entry.seq > expected:
        where = (
            f"entry {entry.seq} follows entry {expected - 1}"
            if expected > 1
            else "the log begins at entry 1"
        )
        return Problem(expected, "removed", f"{_missing(expected, entry.seq)} ({where})")
    if entry.seq < expected:  # seq is the primary key: only a broken store repeats one
        return Problem(entry.seq, "inserted", f"entry {entry.seq} appears twice")
    intact = entry_hash(entry) == entry.hash
    linked = entry.prev_hash == prev_hash
    if intact and linked:
        return None
    skipped = following is not None and following.prev_hash == prev_hash
    if not linked and skipped:
        return Problem(
            entry.seq,
            "inserted",
            f"entry {entry.seq} was not appended by the log: entry {entry.seq + 1} chains "
            "to the entry before it",
        )
    now = head_after()
    if now is not None and entry.seq > now.seq:
        return Problem(
            entry.seq,
            "inserted",
            f"entry {entry.seq} was not appended by the log: it lies beyond the chain head "
            f"(entry {now.seq})",
        )
    if not intact:
        return Problem(
            entry.seq,
            "altered",
            f"entry {entry.seq} was altered: its hash does not match its content",
        )
    if last is not None:
        return Problem(
            last.seq,
            "altered",
            f"entry {last.seq} was altered and its hash recomputed: entry {entry.seq} names "
            "a different hash before it",
        )
    return Problem(
        entry.seq,
        "altered",
        f"entry {entry.seq} does not begin the chain (its previous hash was changed)",
    )


def _check_tail(last: Entry | None, heads: list[Anchor], now: Anchor | None) -> Problem | None:
    last_seq = last.seq if last is not None else 0
    if now is not None and last_seq > now.seq:  # intact entries appended past the head
        return Problem(
            now.seq + 1,
            "inserted",
            f"entry {now.seq + 1} was not appended by the log: it lies beyond the chain head "
            f"(entry {now.seq})",
        )
    beyond = [a.seq for a in heads if a.seq > last_seq]
    if beyond:
        return Problem(
            last_seq + 1,
            "truncated",
            f"the log ends at entry {last_seq} but entry {max(beyond)} was recorded: entries "
            f"{last_seq + 1}..{max(beyond)} are missing",
        )
    for anchor in heads:
        if last is not None and anchor.seq == last_seq and anchor.hash != last.hash:
            return Problem(
                last_seq,
                "altered",
                f"entry {last_seq} was altered and its hash recomputed: the chain head "
                "recorded for it names a different hash",
            )
    return None


def _missing(first: int, after: int) -> str:
    if after - first == 1:
        return f"entry {first} was removed"
    return f"entries {first}..{after - 1} were removed"


def _lookahead(entries: Iterator[Entry]) -> Iterator[tuple[Entry, Entry | None]]:
    current = next(entries, None)
    while current is not None:
        following = next(entries, None)
        yield current, following
        current = following
