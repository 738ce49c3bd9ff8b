"""The audit log in SQLite and PostgreSQL: appends chained and serialised across processes,
denied accesses batched by a thread, anchors outside the database, and tampering with stored
rows named by verify."""

from __future__ import annotations

import http.server
import itertools
import multiprocessing
import threading
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from modelport.control.audit import AuditFilter, AuditLog, origin
from modelport.control.audit_anchors import FileAnchors, parse_anchors
from modelport.core.errors import Unavailable
from modelport.core.settings import Settings
from modelport.governance.audit_chain import Anchor
from modelport.governance.identity import SYSTEM, Actor
from modelport.store import Database

ADMIN = Actor("admin", "admin")


def audit_log(db: Database, home: Path, **settings: object) -> AuditLog:
    return AuditLog(db, Settings(home=home, **settings))  # type: ignore[arg-type]


def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.record(
            actor=ADMIN,
            action="endpoints.apply",
            target=f"endpoint:e{i}",
            request_id=f"req-{i}",
            source="127.0.0.1",
            before=None,
            after={"name": f"e{i}", "i": i},
        )


def sql(db: Database, statement: str, **params: object) -> None:
    with db.session() as session:
        session.execute(text(statement), params)


def test_record_chains_entries_and_verify_passes(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    fill(log, 5)
    log.record(actor=SYSTEM, action="rollouts.step", target="endpoint:e1", after={"w": 10})
    with db.session() as session:
        entries = log.entries(session, AuditFilter(limit=None))
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[-1].actor == "system" and entries[-1].before == ""
    assert len(entries[-1].after) == 64  # a digest, not the value
    assert log.head().seq == 6 and log.head().hash == entries[-1].hash
    result = log.verify()
    assert result.ok and result.checked == 6


def test_filters(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    fill(log, 3)
    log.record(actor=SYSTEM, action="rollouts.promote", target="endpoint:e1")
    with db.session() as session:
        by_actor = log.entries(session, AuditFilter(actor="system"))
        by_prefix = log.entries(session, AuditFilter(action="rollouts."))
        by_target = log.entries(session, AuditFilter(target="endpoint:e1"))
        newest = log.entries(session, AuditFilter(limit=2), newest=True)
        page = log.entries(session, AuditFilter(after_seq=1, limit=2))
    assert [e.seq for e in by_actor] == [4] and [e.seq for e in by_prefix] == [4]
    assert [e.seq for e in by_target] == [2, 4]
    assert [e.seq for e in newest] == [3, 4] and [e.seq for e in page] == [2, 3]
    assert [e.seq for e in log.stream(AuditFilter(), page=2)] == [1, 2, 3, 4]


def test_long_fields_are_clipped_to_their_columns(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    log.record(
        actor=Actor("u" * 300, "user"), action="a" * 100, target="t" * 300, request_id="r" * 500
    )
    assert log.verify().ok


def _append_many(url: str, home: str, n: int, who: str) -> None:
    database = Database(url)
    log = AuditLog(database, Settings(home=Path(home), audit_anchor="off"))
    for i in range(n):
        log.record(actor=Actor(who, "user"), action="test.append", target=f"t:{i}")
    database.close()


def test_appends_from_several_processes_and_threads_form_one_chain(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """Without the head row's lock two appends would read the same head and fork the chain."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_many, args=(database_url, str(tmp_path), 25, f"p{i}"))
        for i in range(3)
    ]
    log = audit_log(db, tmp_path, audit_anchor="off")
    threads = [
        threading.Thread(
            target=lambda: [
                log.record(actor=ADMIN, action="test.append", target="t") for _ in range(25)
            ]
        )
        for _ in range(2)
    ]
    for worker in [*processes, *threads]:
        worker.start()
    for thread in threads:
        thread.join(60)
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    result = log.verify()
    assert result.ok, result.first_problem
    assert result.checked == 125 and log.head().seq == 125


def test_denied_is_queued_and_written_in_batches_by_the_thread(
    db: Database, tmp_path: Path
) -> None:
    log = audit_log(db, tmp_path)
    log.start()
    try:
        started = time.perf_counter()
        for i in range(200):
            log.denied(
                actor_name="anonymous",
                action="access.denied",
                target="/api/v1/endpoints",
                request_id=f"r{i}",
                source="10.0.0.9",
                reason="missing credential",
            )
        # Queueing is all the caller (the event loop) pays: no database write on its time.
        assert time.perf_counter() - started < 0.05
        deadline = time.monotonic() + 10
        while log.head().seq < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        log.close()
    with db.session() as session:
        entries = log.entries(session, AuditFilter(limit=None))
    assert len(entries) == 200 and entries[0].outcome == "denied"
    assert entries[0].details == {"reason": "missing credential"}
    assert entries[0].source == "10.0.0.9" and entries[-1].request_id == "r199"
    assert log.verify().ok


def test_denied_beyond_the_bound_is_counted_not_stored(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelport.control.audit._QUEUE_LIMIT", 10)
    log = audit_log(db, tmp_path)  # not started: the queue only fills
    for i in range(15):
        log.denied(
            actor_name="x",
            action="auth.throttled",
            target="t",
            request_id=f"{i}",
            source="",
            reason="",
        )
    assert log.dropped == 5
    assert log.flush() == 10 and log.head().seq == 10


def test_close_flushes_what_is_queued(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    log.start()
    log.denied(
        actor_name="x", action="access.denied", target="t", request_id="", source="", reason="r"
    )
    log.close()
    assert log.head().seq == 1


def test_anchors_are_written_when_the_head_moved(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    assert log.anchor() is None  # an empty log has nothing to anchor
    fill(log, 3)
    first = log.anchor()
    assert first is not None and first.seq == 3
    assert log.anchor() is None  # not moved: nothing written
    fill(log, 1)
    second = log.anchor()
    assert second is not None and second.seq == 4
    path = tmp_path / "audit-anchors.jsonl"
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(a["seq"], a["hash"]) for a in lines] == [(3, first.hash), (4, second.hash)]
    assert path.stat().st_mode & 0o777 == 0o600
    # A restarted server reads where it left off and does not anchor the same head again.
    assert audit_log(db, tmp_path).anchor() is None


def test_the_thread_anchors_every_interval(db: Database, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "anchors.jsonl"
    log = audit_log(db, tmp_path, audit_anchor=str(target), audit_anchor_interval_s=0.2)
    log.start()
    try:
        fill(log, 2)
        deadline = time.monotonic() + 10
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        fill(log, 1)
    finally:
        log.close()  # anchors the last head on the way out
    assert [a.seq for a in FileAnchors(target).read()][-1] == 3


def test_a_torn_last_anchor_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"seq":1,"hash":"' + b"a" * 64 + b'","at":""}\n{"seq":2,"ha')
    assert [a.seq for a in FileAnchors(path).read()] == [1]
    with pytest.raises(ValueError, match="line 1"):
        parse_anchors(b"not json\n")


# -- tampering with the stored rows ------------------------------------------------------------


def test_an_altered_row_is_named(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    fill(log, 6)
    sql(db, "UPDATE audit_entries SET actor = 'eve' WHERE seq = 4")
    problem = log.verify().first_problem
    assert problem is not None and (problem.seq, problem.kind) == (4, "altered")


def test_a_deleted_row_is_named(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    fill(log, 6)
    sql(db, "DELETE FROM audit_entries WHERE seq = 2")
    problem = log.verify().first_problem
    assert problem is not None and (problem.seq, problem.kind) == (2, "removed")


def test_an_inserted_row_is_named(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    fill(log, 4)
    sql(
        db,
        "INSERT INTO audit_entries (seq, at, actor, action, target, request_id, source, "
        "before, after, outcome, details, prev_hash, hash) SELECT 5, at, 'eve', "
        "'keys.create', target, '', '', '', '', 'ok', details, hash, hash FROM audit_entries "
        "WHERE seq = 4",
    )
    problem = log.verify().first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "inserted")


def test_a_truncated_tail_is_named_by_the_anchor(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    fill(log, 6)
    log.anchor()
    # Whoever cuts the tail also puts the head row back: the anchor file still knows.
    sql(db, "DELETE FROM audit_entries WHERE seq > 4")
    sql(db, "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_entries WHERE seq = 4)")
    problem = log.verify().first_problem
    assert problem is not None and (problem.seq, problem.kind) == (5, "truncated")
    assert audit_log(db, tmp_path, audit_anchor="off").verify().ok  # without it, nothing shows


def test_origin_reads_the_guards_state_then_the_request() -> None:
    scope = {
        "state": {"request_id": "from-guard"},
        "headers": [(b"x-request-id", b"from-header")],
        "client": ("10.1.2.3", 5555),
    }
    assert origin(scope) == ("from-guard", "10.1.2.3")
    assert origin({"headers": [(b"x-request-id", b"h")], "client": None}) == ("h", "")


def test_anchors_are_posted_to_a_webhook(db: Database, tmp_path: Path) -> None:
    received: list[dict[str, object]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            received.append(orjson.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/anchors"
        log = audit_log(db, tmp_path, audit_anchor=url)
        fill(log, 2)
        anchor = log.anchor()
        assert anchor is not None
        assert received == [{"seq": 2, "hash": anchor.hash, "at": anchor.at}]
        assert not (tmp_path / "audit-anchors.jsonl").exists()
        # What the receiver kept is what verify is given: a cut tail shows against it.
        sql(db, "DELETE FROM audit_entries WHERE seq = 2")
        sql(db, "UPDATE audit_head SET seq = 1, hash = (SELECT hash FROM audit_entries)")
        problem = log.verify([Anchor(2, anchor.hash)]).first_problem
        assert problem is not None and (problem.seq, problem.kind) == (2, "truncated")
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_details_are_stored_as_json_reads_them_back(db: Database, tmp_path: Path) -> None:
    log = audit_log(db, tmp_path)
    log.record(
        actor=ADMIN,
        action="test.details",
        target="t",
        details={"ratio": float("nan"), 3: "int key", "when": time, "share": 0.1},
    )
    with db.session() as session:
        (entry,) = log.entries(session, AuditFilter())
    assert entry.details["ratio"] is None and entry.details["3"] == "int key"
    assert log.verify().ok


def test_a_damaged_anchor_file_is_a_clear_error_and_anchoring_goes_on(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "audit-anchors.jsonl"
    path.write_bytes(b"garbage\n")
    log = audit_log(db, tmp_path)
    fill(log, 1)
    with pytest.raises(Unavailable, match="line 1"):
        log.verify()
    assert log.anchor() is not None  # the head is still copied out
    assert path.read_bytes().startswith(b"garbage\n{")
