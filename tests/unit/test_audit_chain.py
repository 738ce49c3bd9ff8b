"""The audit hash chain: canonical bytes, hashing, and verify naming the first problem."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from modelport.governance.audit_chain import (
    GENESIS,
    Anchor,
    Entry,
    canonical,
    digest,
    entry_hash,
    seal,
    verify,
)

T0 = datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC)


def chain(n: int) -> list[Entry]:
    entries: list[Entry] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        entry = seal(
            Entry(
                seq=seq,
                at=T0 + timedelta(seconds=seq),
                actor="admin",
                action="endpoints.apply",
                target=f"endpoint:e{seq}",
                request_id=f"req-{seq}",
                source="127.0.0.1",
                after=digest({"n": seq}),
                details={"k": seq},
            ),
            prev,
        )
        entries.append(entry)
        prev = entry.hash
    return entries


def head(entries: list[Entry]) -> Anchor:
    return Anchor(entries[-1].seq, entries[-1].hash)


def test_an_intact_chain_verifies() -> None:
    entries = chain(5)
    result = verify(entries, [Anchor(3, entries[2].hash)], head=head(entries))
    assert result.ok and result.checked == 5 and result.first_problem is None
    assert verify([], head=Anchor(0, GENESIS)).ok


def test_canonical_bytes_cover_every_field_but_the_hash() -> None:
    entry = chain(1)[0]
    for name, value in [
        ("seq", 2),
        ("at", T0 + timedelta(microseconds=1)),
        ("actor", "eve"),
        ("action", "keys.create"),
        ("target", "endpoint:x"),
        ("request_id", "r"),
        ("source", "10.0.0.1"),
        ("before", "x"),
        ("after", ""),
        ("outcome", "denied"),
        ("details", {"k": 2}),
        ("prev_hash", "1" * 64),
    ]:
        assert canonical(replace(entry, **{name: value})) != canonical(entry), name
    assert canonical(replace(entry, hash="f" * 64)) == canonical(entry)
    # The same moment in another zone is the same entry; key order in details does not count.
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    assert canonical(replace(entry, at=plus_two)) == canonical(replace(entry, at=T0))
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1}) and digest(None) == ""


@pytest.mark.parametrize("field", ["actor", "target", "outcome", "details", "at"])
def test_one_altered_field_names_that_entry(field: str) -> None:
    entries = chain(6)
    value = {
        "actor": "eve",
        "target": "endpoint:other",
        "outcome": "denied",
        "details": {"k": 99},
        "at": T0,
    }[field]
    entries[3] = replace(entries[3], **{field: value})
    problem = verify(entries, head=head(entries)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (4, "altered")
    assert "entry 4" in problem.message


def test_an_entry_altered_with_its_hash_recomputed_is_named_by_the_next_link() -> None:
    entries = chain(6)
    forged = replace(entries[2], actor="eve")
    entries[2] = replace(forged, hash=entry_hash(forged))
    result = verify(entries, head=head(entries))
    assert result.first_problem is not None
    assert (result.first_problem.seq, result.first_problem.kind) == (3, "altered")
    assert result.checked == 3  # entries 1..3 were read as sound before entry 4 showed it


def test_the_last_entry_altered_and_rehashed_is_caught_by_the_head() -> None:
    entries = chain(4)
    recorded = head(entries)
    forged = replace(entries[3], actor="eve")
    entries[3] = replace(forged, hash=entry_hash(forged))
    problem = verify(entries, head=recorded).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (4, "altered")


def test_a_removed_entry_is_named() -> None:
    entries = chain(6)
    del entries[2]  # seq 3
    problem = verify(entries, head=head(entries)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (3, "removed")
    assert "entry 3 was removed" in problem.message
    first = chain(3)[1:]
    problem = verify(first, head=head(first)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (1, "removed")


def test_a_forged_entry_inserted_in_the_middle_is_named() -> None:
    # Renumbered to make room (seq is the primary key): the forged entry takes seq 3.
    entries = chain(5)
    forged = seal(replace(entries[2], actor="eve", details={}), "e" * 64)
    shifted = [replace(e, seq=e.seq + 1) for e in entries[2:]]
    tampered = [*entries[:2], replace(forged, seq=3), *shifted]
    problem = verify(tampered, head=head(entries)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (3, "inserted")


def test_a_forged_entry_appended_past_the_head_is_inserted() -> None:
    entries = chain(4)
    recorded = head(entries)
    # Even chained correctly and hashed, an entry the log's head never moved to is foreign.
    forged = seal(replace(entries[3], seq=5, actor="eve"), entries[3].hash)
    problem = verify([*entries, forged], head=recorded).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "inserted")
    # A clumsier forgery (made-up hashes) is named the same way.
    clumsy = replace(forged, prev_hash="1" * 64, hash="2" * 64)
    problem = verify([*entries, clumsy], head=recorded).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "inserted")


def test_an_entry_appended_while_verifying_is_not_foreign() -> None:
    entries = chain(5)
    read_before = Anchor(4, entries[3].hash)  # the head when verify began: entry 5 came later
    result = verify(entries, head=read_before, head_now=lambda: head(entries))
    assert result.ok, result.first_problem


def test_a_truncated_tail_is_caught_by_anchors_and_by_the_head() -> None:
    entries = chain(6)
    anchors = [Anchor(2, entries[1].hash), Anchor(6, entries[5].hash, "2026-11-30T09:00:06")]
    cut = entries[:4]
    # The head row moved back too (whoever truncated rewrote it): only the anchor knows.
    problem = verify(cut, anchors, head=head(cut)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "truncated")
    assert "5..6" in problem.message
    # The head row left as it was tells the same.
    problem = verify(cut, head=head(entries)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "truncated")


def test_a_chain_rewritten_from_some_entry_on_is_caught_by_an_anchor() -> None:
    entries = chain(6)
    anchors = [Anchor(5, entries[4].hash)]
    # Rewrite entry 3 and recompute every hash after it: consistent in itself.
    rewritten = entries[:2]
    prev = entries[1].hash
    for entry in entries[2:]:
        entry = seal(replace(entry, actor="eve" if entry.seq == 3 else entry.actor), prev)
        rewritten.append(entry)
        prev = entry.hash
    assert verify(rewritten, head=head(rewritten)).ok  # without anchors, nothing shows
    problem = verify(rewritten, anchors, head=head(rewritten)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "altered")
    assert "rewritten" in problem.message


def test_only_the_first_problem_is_named() -> None:
    entries = chain(8)
    entries[5] = replace(entries[5], actor="eve")
    del entries[1]
    problem = verify(entries, head=head(entries)).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (2, "removed")


def test_verify_reads_the_entries_once() -> None:
    entries = chain(3)
    result = verify(iter(entries), head=head(entries))
    assert result.ok and result.checked == 3
