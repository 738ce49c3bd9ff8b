"""Loading the usage journal: idempotent, rollups that reconcile, torn lines, retention."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import delete, func, select

from modelport.control import usage as reports
from modelport.control.times import parse_time
from modelport.control.usage_loader import UsageLoader, bucket_start, store_batch
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.usage import Units, UsageRecord
from modelport.observability.journal import UsageJournal, segments
from modelport.store import Database
from modelport.store.tables import (
    ROLLUP_DIMENSIONS,
    ApiKeyRow,
    UsageEventRow,
    UsageOffsetRow,
    UsageRollupRow,
)

NOW = datetime(2026, 11, 30, 12, 30, 15, tzinfo=UTC)


def record(n: int, at: float, **kwargs: object) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": f"req-{n}",
        "endpoint": ("iris", "chat")[n % 2],
        "revision": "r1",
        "key_id": ("k1", "k2", "k3")[n % 3],
        "project": "default",
        "customer": ("acme", "", "globex", "initech")[n % 4],
        "team": ("search", "ads")[n % 2],
        "status": (200, 200, 200, 500, 404)[n % 5],
        "latency_ms": 10.0 + n,
        "upstream_ms": 8.0 + n,
        "units": Units(rows=n % 7, input_tokens=n, output_tokens=2 * n),
        "at": at,
        "model": "m",
        "model_version": 1,
        "task": "tabular",
    }
    values.update(kwargs)
    return UsageRecord(**values)  # type: ignore[arg-type]


def many(count: int, start: float, spread_s: float) -> list[UsageRecord]:
    return [record(n, start + spread_s * n / count) for n in range(count)]


def write(directory: Path, records: list[UsageRecord], *, keep_open: bool = False) -> UsageJournal:
    """A journal of ``records``; closed (its segment finished) unless ``keep_open``."""
    journal = UsageJournal(directory)
    for one in records:
        journal.record(one)
    if not keep_open:
        asyncio.run(journal.close())
    return journal


def loader(db: Database, directory: Path, **kwargs: object) -> UsageLoader:
    return UsageLoader(db, directory, **kwargs)  # type: ignore[arg-type]


def count_events(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(UsageEventRow)) or 0)


def test_loading_the_same_journal_twice_stores_each_event_once(
    db: Database, tmp_path: Path
) -> None:
    directory = tmp_path / "usage"
    records = many(300, NOW.timestamp() - 3600, 3000)
    write(directory, records)
    first = loader(db, directory)
    assert first.load_once() == 300
    with db.session() as session:
        rollups_before = session.execute(select(UsageRollupRow)).scalars().all()
        totals_before = {
            (r.granularity, r.bucket_start, r.customer): r.requests for r in rollups_before
        }
        # Forget every offset: the loader reads the whole journal again, as after a crash
        # between storing events and storing the offset.
        session.execute(delete(UsageOffsetRow))
    assert first.load_once() == 0
    assert count_events(db) == 300
    with db.session() as session:
        rollups_after = session.execute(select(UsageRollupRow)).scalars().all()
        totals_after = {
            (r.granularity, r.bucket_start, r.customer): r.requests for r in rollups_after
        }
    assert totals_after == totals_before
    # The same records in a second journal (a copied segment) are not new either.
    write(tmp_path / "copy", records)
    assert loader(db, tmp_path / "copy").load_once() == 0
    assert count_events(db) == 300


def test_rollups_reconcile_exactly_with_raw_events(db: Database, tmp_path: Path) -> None:
    directory = tmp_path / "usage"
    write(directory, many(500, NOW.timestamp() - 2 * 86400, 2 * 86400))
    loader(db, directory).load_once()
    with db.session() as session:
        for granularity in ("minute", "hour", "day"):
            for dimension in ("team", "project", "customer", "endpoint", "revision", "key_id"):
                sums = (
                    func.sum(UsageRollupRow.requests),
                    func.sum(UsageRollupRow.rows),
                    func.sum(UsageRollupRow.input_tokens),
                    func.sum(UsageRollupRow.output_tokens),
                    func.sum(UsageRollupRow.errors),
                )
                rolled = session.execute(
                    select(getattr(UsageRollupRow, dimension), *sums)
                    .where(UsageRollupRow.granularity == granularity)
                    .group_by(getattr(UsageRollupRow, dimension))
                ).all()
                raw = session.execute(
                    select(
                        getattr(UsageEventRow, dimension),
                        func.sum(UsageEventRow.requests),
                        func.sum(UsageEventRow.rows),
                        func.sum(UsageEventRow.input_tokens),
                        func.sum(UsageEventRow.output_tokens),
                        func.sum(
                            (UsageEventRow.judged & (UsageEventRow.status >= 500)).cast(
                                UsageEventRow.requests.type
                            )
                        ),
                    ).group_by(getattr(UsageEventRow, dimension))
                ).all()
                assert sorted(map(tuple, rolled)) == sorted(map(tuple, raw)), (
                    granularity,
                    dimension,
                )
        # The report over the whole range gives the same per customer.
        result = reports.report(session, by="customer", since="3d", now=NOW)
        raw_rows = dict(
            session.execute(
                select(UsageEventRow.customer, func.sum(UsageEventRow.rows)).group_by(
                    UsageEventRow.customer
                )
            ).all()
        )
        assert {row["customer"]: row["rows"] for row in result["rows"]} == raw_rows
        assert result["total"]["requests"] == 500


def test_a_report_over_any_window_equals_the_raw_events_of_its_minutes(
    db: Database, tmp_path: Path
) -> None:
    directory = tmp_path / "usage"
    write(directory, many(400, NOW.timestamp() - 3 * 86400, 3 * 86400))
    loader(db, directory).load_once()
    with db.session() as session:
        for since, until in [
            ("2026-11-27T13:17:40Z", "2026-11-29T02:03:10Z"),
            ("2026-11-28T00:00:00Z", "2026-11-28T00:59:00Z"),
            ("2026-11-27T23:05:00Z", "2026-11-30T00:00:00Z"),
        ]:
            result = reports.report(session, by="team", since=since, until=until, now=NOW)
            start = datetime.fromisoformat(result["since"])
            end = datetime.fromisoformat(result["until"])
            raw = dict(
                session.execute(
                    select(UsageEventRow.team, func.sum(UsageEventRow.requests))
                    .where(UsageEventRow.at >= start, UsageEventRow.at < end)
                    .group_by(UsageEventRow.team)
                ).all()
            )
            assert {row["team"]: row["requests"] for row in result["rows"]} == raw


def test_a_month_is_answered_from_day_rollups() -> None:
    since = datetime(2026, 10, 30, 12, 30, 15, tzinfo=UTC)
    pieces = reports.plan(since, NOW)
    kinds = [granularity for granularity, _, _ in pieces]
    assert kinds == ["minute", "hour", "day", "hour", "minute"]
    day = next(p for p in pieces if p[0] == "day")
    assert day[2] - day[1] == timedelta(days=30)
    # Tiled without gaps or overlaps, from the minute of since to the minute after until.
    assert pieces[0][1] == datetime(2026, 10, 30, 12, 30, tzinfo=UTC)
    assert pieces[-1][2] == datetime(2026, 11, 30, 12, 31, tzinfo=UTC)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(pieces))


def test_a_month_of_rollups_answers_from_few_rows(db: Database) -> None:
    """30 days of hour and day rollups for 20 customers: the report reads the day rows."""
    rows = []
    start = NOW - timedelta(days=30)
    for hour in range(30 * 24):
        at = (start + timedelta(hours=hour)).timestamp()
        for customer in range(20):
            rows.append(record(hour * 20 + customer, at, customer=f"c{customer}"))
    with db.session() as session:
        store_batch(session, rows)
        result = reports.report(session, by="customer", since="30d", now=NOW)
    assert [p["granularity"] for p in result["pieces"]].count("day") == 1
    assert result["total"]["requests"] == len(rows) - sum(
        1 for r in rows if r.at < datetime.fromisoformat(result["since"]).timestamp()
    )
    assert len(result["rows"]) == 20


def test_slo_counts_in_rollups(db: Database) -> None:
    at = NOW.timestamp()
    batch = [
        record(0, at, status=200, latency_ms=50.0),
        record(1, at, status=200, latency_ms=500.0),
        record(2, at, status=503, latency_ms=5.0),
        record(3, at, status=404, latency_ms=900.0),  # the client's fault: not counted
        record(4, at, status=200, latency_ms=900.0, judged=False),  # pinned: not counted
    ]
    for one in batch:
        one.endpoint = one.team = "x"
    with db.session() as session:
        store_batch(session, batch, latency_target_ms=lambda _e: 100.0, cost_of=lambda r: 7)
        day = session.scalars(
            select(UsageRollupRow).where(UsageRollupRow.granularity == "day")
        ).all()
    sums = {
        name: sum(getattr(r, name) for r in day)
        for name in ("requests", "slo_requests", "errors", "slow", "cost_nanousd")
    }
    assert sums == {"requests": 5, "slo_requests": 3, "errors": 1, "slow": 1, "cost_nanousd": 35}
    assert {r.bucket_start for r in day} == {bucket_start(at, "day")}


def test_torn_and_bad_lines_are_skipped_and_finished_segments_deleted(
    db: Database, tmp_path: Path
) -> None:
    directory = tmp_path / "usage"
    journal = write(directory, many(5, NOW.timestamp(), 10), keep_open=True)
    (segment,) = segments(directory)
    with segment.open("ab") as handle:
        handle.write(b'{"not": "a record"}\n{broken json\n')
        handle.write(orjson.dumps(record(99, NOW.timestamp()))[:30])  # torn by a SIGKILL
    # While the journal still writes it, the torn tail may be a line being written: kept.
    live = loader(db, directory)
    assert live.load_once() == 5
    assert segment.exists()
    # Once it is finished (the writer closed it, or died: either drops its lock), it is read
    # to its end and deleted.
    asyncio.run(journal.close())
    assert loader(db, directory).load_once() == 0
    assert not segment.exists()
    assert count_events(db) == 5
    with db.session() as session:
        assert session.scalars(select(UsageOffsetRow)).all() == []


def test_raw_events_past_the_retention_are_deleted_rollups_kept(
    db: Database, tmp_path: Path
) -> None:
    directory = tmp_path / "usage"
    now = time.time()
    write(directory, [record(1, now - 40 * 86400), record(2, now - 10 * 86400), record(3, now)])
    loader(db, directory, retention_days=30).load_once()
    assert count_events(db) == 2
    with db.session() as session:
        requests = session.scalar(
            select(func.sum(UsageRollupRow.requests)).where(UsageRollupRow.granularity == "day")
        )
    assert requests == 3


def test_loader_thread_loads_and_does_a_final_load_on_close(db: Database, tmp_path: Path) -> None:
    directory = tmp_path / "usage"
    journal = UsageJournal(directory)
    background = loader(db, directory, interval_s=0.05)
    background.start()
    for n in range(10):
        journal.record(record(n, time.time()))
    deadline = time.monotonic() + 5
    while count_events(db) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert count_events(db) == 10
    journal.record(record(10, time.time()))
    background.close()
    assert count_events(db) == 11


def test_bad_report_inputs_are_400s_naming_the_field(db: Database) -> None:
    with db.session() as session:
        # A key reported under team "search" (as one made before keys took their project's
        # team), so that the team is one a report may name.
        session.add(
            ApiKeyRow(
                id="key_k", prefix="mp_", key_hash="h", project="default", name="k", team="search"
            )
        )
    with db.session() as session:
        for kwargs, field in [
            ({"by": "colour"}, "by"),
            ({"by": "team", "since": "yesterday"}, "since"),
            ({"by": "team", "since": "24x"}, "since"),
            ({"by": "team", "until": "2026-13-01"}, "until"),
            ({"by": "team", "since": "1h", "until": "2h"}, "since"),
            ({"by": "team", "since": "99999999999d"}, "since"),
            ({"by": "team", "until": "9999-12-31T23:59:59.5"}, "until"),
            ({"by": "team", "since": "1969-12-31"}, "since"),
        ]:
            with pytest.raises(InvalidRequest) as caught:
                reports.report(session, now=NOW, **kwargs)  # type: ignore[arg-type]
            assert caught.value.details["param"] == field
        with pytest.raises(NotFound) as missing:
            reports.report(session, by="team", filters={"team": "nobody"}, now=NOW)
        assert missing.value.details["param"] == "team"
        assert reports.report(session, by="team", filters={"team": "search"}, now=NOW)["rows"] == []
        with pytest.raises(InvalidRequest) as limit:
            reports.events(session, limit=0, now=NOW)
        assert limit.value.details["param"] == "limit"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", NOW - timedelta(minutes=90)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_iso_times(text: str, expected: datetime) -> None:
    assert parse_time(text, "since", NOW) == expected


def test_rollup_dimensions_are_the_events_columns() -> None:
    assert set(ROLLUP_DIMENSIONS) <= {c.name for c in UsageEventRow.__table__.columns}


def test_an_event_the_database_refuses_is_skipped_not_retried_forever(
    db: Database, tmp_path: Path
) -> None:
    directory = tmp_path / "usage"
    at = NOW.timestamp()
    # Year 31690: no database (nor Python datetime) stores it.
    write(directory, [record(1, at), record(2, 1e15), record(3, at)])
    assert loader(db, directory).load_once() == 2
    assert not segments(directory)  # read to its end, and deleted
    with db.session() as session:
        stored = set(session.scalars(select(UsageEventRow.request_id)))
        requests = session.scalar(
            select(func.sum(UsageRollupRow.requests)).where(UsageRollupRow.granularity == "day")
        )
    assert stored == {"req-1", "req-3"}
    assert requests == 2


def test_events_newer_than_the_prices_read_wait_for_the_next_pass(
    db: Database, tmp_path: Path
) -> None:
    """With ``refresh`` (the loader process re-reads prices before each pass), an event
    newer than that read is left for the next pass: a price set after the read takes effect
    after it, so the event would otherwise be priced at prices older than its own time."""
    directory = tmp_path / "usage"
    now = time.time()
    write(directory, [record(1, now - 10), record(2, now - 5), record(3, now + 3600)])
    reads: list[float] = []
    waiting = loader(db, directory, refresh=lambda: reads.append(time.time()))
    assert waiting.load_once() == 2
    assert len(reads) == 1
    with db.session() as session:
        assert set(session.scalars(select(UsageEventRow.request_id))) == {"req-1", "req-2"}
    # The segment is finished (its journal closed) but not done with: kept, not deleted.
    assert len(segments(directory)) == 1
    assert waiting.load_once() == 0  # still in the future
    # Once that time has come (here: a loader without a horizon), the rest is loaded once.
    assert loader(db, directory).load_once() == 1
    assert count_events(db) == 3
    assert not segments(directory)
