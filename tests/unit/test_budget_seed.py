"""Seeding a budget line: what its scope spent in the day and month before the line existed,
from the rollups, the raw events and the journal's events not loaded yet, each counted once
(SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from modelport.control.budget_seed import spent_before
from modelport.control.usage_loader import store_batch
from modelport.core.usage import UsageRecord
from modelport.store import Database
from tests.unit.test_rollups import NOW, record, write

SINCE = NOW.timestamp()  # 2026-11-30 12:30:15 UTC
DAY = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
MONTH = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def cost_of(record: UsageRecord) -> int:
    return 1000 + 7 * record.units.rows


def test_each_event_before_since_is_counted_once_wherever_it_is(
    db: Database, tmp_path: Path
) -> None:
    times = [
        datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC).timestamp(),  # last month: not counted
        MONTH + 5,  # a whole day of this month: day rollups
        MONTH + 86400 * 10 + 3600 * 5,
        DAY + 3600 * 3 + 17,  # a whole hour of today: hour rollups
        DAY + 3600 * 12 + 60 * 10,  # a whole minute of this hour: minute rollups
        DAY + 3600 * 12 + 60 * 30 + 1.5,  # this minute, before since: raw events
        SINCE - 0.001,
        SINCE,  # counted live by the ledger, not here
        SINCE + 30,
    ]
    records = [record(n, at) for n, at in enumerate(times)]
    # The loader stored the first six; the journal still holds the last five (one of them
    # loaded already), plus nothing of the others: their segment was loaded and deleted.
    with db.session() as session:
        store_batch(session, records[:6], cost_of=cost_of)
    write(tmp_path / "usage", records[5:])
    scopes = {("key", "k1"), ("key", "k2"), ("team", "search"), ("customer", "acme")}
    spent = spent_before(db, tmp_path / "usage", cost_of, scopes, int(SINCE * 1_000_000))

    expected: dict[tuple[str, str, str], int] = {}
    for one in records:
        if not MONTH <= one.at < SINCE:
            continue
        for kind, value in (("key", one.key_id), ("team", one.team), ("customer", one.customer)):
            if (kind, value) in scopes:
                for period in ("monthly", "daily") if one.at >= DAY else ("monthly",):
                    key = (kind, value, period)
                    expected[key] = expected.get(key, 0) + cost_of(one)
    assert spent == expected
    assert spent[("team", "search", "monthly")] > spent[("team", "search", "daily")] > 0


def test_nothing_stored_nothing_journaled_is_zero(db: Database, tmp_path: Path) -> None:
    assert spent_before(db, tmp_path / "none", cost_of, {("project", "p")}, int(SINCE * 1e6)) == {}
    assert spent_before(db, None, cost_of, set(), int(SINCE * 1e6)) == {}
