"""The usage journal: one line per record, before the answer; torn tails; fan-out."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from modelport.core.usage import Units, UsageRecord
from modelport.observability.journal import (
    UsageJournal,
    complete_lines,
    is_written,
    iter_records,
    segments,
)
from modelport.observability.usage import RecentUsage


def record(n: int = 0, **kwargs: object) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": f"req-{n}",
        "endpoint": "iris",
        "revision": "r1",
        "key_id": "k1",
        "project": "default",
        "customer": "acme",
        "status": 200,
        "latency_ms": 1.5,
        "units": Units(rows=n + 1),
    }
    values.update(kwargs)
    return UsageRecord(**values)  # type: ignore[arg-type]


def read_all(directory: Path) -> list[UsageRecord]:
    out: list[UsageRecord] = []
    for segment in segments(directory):
        lines, _ = complete_lines(segment.read_bytes())
        out.extend(r for r in iter_records(lines) if r is not None)
    return out


def test_each_record_is_on_disk_when_record_returns(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    first = record(1, customer="", ttft_ms=12.5, judged=False)
    journal.record(first)
    # No flush, no close: the line is already the kernel's (what survives a SIGKILL).
    (again,) = read_all(tmp_path)
    assert again == first
    assert len(again.event_id) == 16
    assert again.units.rows == 2


def test_a_new_journal_starts_a_new_segment_and_rotates_by_size(tmp_path: Path) -> None:
    old = UsageJournal(tmp_path)
    old.record(record(0))
    journal = UsageJournal(tmp_path, segment_bytes=1000)
    for n in range(20):
        journal.record(record(n))
    names = [s.name for s in segments(tmp_path)]
    assert len(names) > 3, names
    assert names[-1] == journal.active_segment
    assert [r.request_id for r in read_all(tmp_path)] == ["req-0"] + [f"req-{n}" for n in range(20)]


def test_a_torn_last_line_waits_until_it_is_whole() -> None:
    whole = orjson.dumps(record(1)) + b"\n"
    torn = orjson.dumps(record(2))[:40]
    lines, used = complete_lines(whole + torn)
    assert used == len(whole)
    assert len(lines) == 1
    assert complete_lines(torn) == ([], 0)


def test_bad_lines_are_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    good = orjson.dumps(record(1))
    # Parseable JSON with a wrong type would fail at the database, batch after batch.
    wrong_type = good.replace(b'"status":200', b'"status":"200"')
    lines = [b"{not json", b"[1, 2]", b'{"endpoint": "x"}', b"", wrong_type, good]
    parsed = list(iter_records(lines))
    assert parsed[:5] == [None] * 5
    assert parsed[5] is not None and parsed[5].request_id == "req-1"
    assert "skipping a usage journal line" in caplog.text


async def test_subscribers_get_batches_on_the_loop(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path, fanout_interval_s=0.02, fsync_interval_s=0.02)
    recent = RecentUsage(size=5)
    batches: list[Sequence[UsageRecord]] = []

    def broken(_records: Sequence[UsageRecord]) -> None:
        raise RuntimeError("a consumer with a bug")

    journal.subscribe(broken)
    journal.subscribe(batches.append)
    journal.subscribe(recent.take)
    await journal.start()
    for n in range(8):
        journal.record(record(n))
    await asyncio.sleep(0.1)
    assert sum(len(batch) for batch in batches) == 8
    assert [r.request_id for r in recent.recent(10)] == [f"req-{n}" for n in range(3, 8)]
    journal.record(record(9))
    await journal.close()  # delivers the rest
    assert batches[-1][-1].request_id == "req-9"
    assert journal.active_segment is None


async def test_close_syncs_and_closes_every_descriptor(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path, segment_bytes=500, fsync_interval_s=0.01)
    await journal.start()
    before = len(os.listdir("/proc/self/fd"))
    for n in range(30):
        journal.record(record(n))
    await asyncio.sleep(0.05)
    await journal.close()
    assert len(os.listdir("/proc/self/fd")) < before
    assert len(read_all(tmp_path)) == 30


def test_a_failing_disk_loses_the_event_not_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = UsageJournal(tmp_path)
    recent = RecentUsage()
    journal.subscribe(recent.take)
    journal.record(record(1))
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    os.dup2(full, journal._fd)
    os.close(full)
    journal.record(record(2))
    journal.record(record(3))
    assert journal.lost == 2
    assert "2 usage event(s) lost" not in caplog.text  # said once, not per request
    assert "1 usage event(s) lost" in caplog.text
    journal.fan_out()
    assert len(recent.recent()) == 3  # the in-memory views still see them


def test_the_recent_view_catches_up_when_read(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    recent = RecentUsage()
    journal.subscribe(recent.take)
    recent.catch_up = journal.fan_out
    journal.record(record(1))
    # No fan-out tick has run: reading the view delivers what is pending first.
    assert [r.request_id for r in recent.recent()] == ["req-1"]


def test_a_record_json_cannot_hold_is_lost_not_raised(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    journal.record(record(1, units=Units(rows=2**70)))  # an upstream's absurd units header
    assert journal.lost == 1
    assert read_all(tmp_path) == []


def test_a_segment_is_written_while_a_live_journal_holds_it(tmp_path: Path) -> None:
    """The loader, in another process, tells a finished segment by the journal's lock: held
    while the journal writes it, gone when the journal moves on, closes or is killed."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from modelport.core.usage import UsageRecord\n"
        "from modelport.observability.journal import UsageJournal\n"
        "journal = UsageJournal(Path(sys.argv[1]))\n"
        "journal.record(UsageRecord('r', 'e', 'r1', 'k', 'p', '', 200, 1.0))\n"
        "print('written', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written"
        (segment,) = segments(tmp_path)
        assert is_written(segment)
        assert is_written(segment)  # probing does not take the lock away
    finally:
        child.kill()  # SIGKILL: no cleanup of its own
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert not is_written(segment)
    assert [r.request_id for r in read_all(tmp_path)] == ["r"]
