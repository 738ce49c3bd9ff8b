"""The budget service on a real (SQLite) database: caps stored and published, lines seeded
from stored usage, 80% / 100% notices opened once per threshold per period (also across a
restart) and resolved when their period is over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.control import budgets as service
from modelport.control.alerts import DbEpisodeStore
from modelport.control.usage_loader import store_batch
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.usage import Units, UsageRecord
from modelport.governance.budget_ledger import MemoryLedger
from modelport.governance.budgets import BudgetGuard
from modelport.observability.alerts import Alerts
from modelport.store import Database

MILLI = 1_000_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'budgets.db'}")
    database.migrate()
    yield database
    database.close()


def cost_of(record: UsageRecord) -> int:
    return MILLI * record.units.requests


def test_bad_caps_are_refused_naming_the_field_and_nothing_is_stored(db: Database) -> None:
    cases = [
        ("planet", "x", {"daily_usd": "1"}, InvalidRequest, "kind"),
        ("project", "default", {"daily_usd": -0.5}, InvalidRequest, "daily_usd"),
        ("project", "default", {"monthly_usd": "NaN"}, InvalidRequest, "monthly_usd"),
        ("project", "default", {"monthly_usd": float("inf")}, InvalidRequest, "monthly_usd"),
        ("project", "default", {"monthly_usd": [1]}, InvalidRequest, "monthly_usd"),
        ("project", "default", {"daily_usd": None}, InvalidRequest, "monthly_usd"),
        ("project", "nope", {"daily_usd": "1"}, NotFound, "name"),
        ("team", "nope", {"daily_usd": "1"}, NotFound, "name"),
        ("key", "key_nope", {"daily_usd": "1"}, NotFound, "name"),
        ("customer", "", {"daily_usd": "1"}, InvalidRequest, "name"),
    ]
    for kind, name, caps, error, field in cases:
        with pytest.raises(error) as raised, db.session() as session:
            service.set_budget(session, kind=kind, name=name, caps=caps, actor="admin")
        assert raised.value.details["field"] == field, (kind, name, caps)
    with db.session() as session:
        assert service.load_budgets(session).budgets == []
        before, after = service.set_budget(
            session, kind="customer", name="acme", caps={"daily_usd": 1.5}, actor="admin"
        )
    assert before is None and after == {"daily_usd": "1.500000000", "monthly_usd": None}


async def test_notices_once_per_threshold_per_period_and_resolved_when_it_ends(
    db: Database,
) -> None:
    with db.session() as session:
        service.set_budget(
            session, kind="project", name="default", caps={"daily_usd": "0.01"}, actor="a"
        )
        # Spent before the server started: 8 calls of $0.001, stored by the loader.
        import time

        now = time.time()
        store_batch(
            session,
            [
                UsageRecord(f"r{n}", "bc", "r1", "k", "default", "", 200, 1.0, Units(), at=now - 1)
                for n in range(8)
            ],
            cost_of=cost_of,
        )
    alerts = Alerts(DbEpisodeStore(db))
    await alerts.start()
    guard = BudgetGuard(MemoryLedger())
    budgets = service.BudgetService(db, guard, alerts=alerts, cost_of=cost_of, interval_s=60)
    await budgets.start()
    try:
        (status,) = await budgets.status()
        assert status["daily"]["spent_usd"] == "0.008000000"  # seeded from the rollups
        await budgets.tick()
        await budgets.tick()
        opened = sorted(k for k in await alerts.open_keys() if k.startswith("budget:"))
        assert len(opened) == 1 and ":80:default" in opened[0]
        # Two more calls settle: 100% crossed, notified once however often it is checked.
        key = ("project", "default", "daily", status["daily"]["period_id"])
        await guard.ledger.settle([], 0, [key], 2 * MILLI, int(now * 1e6))
        for _ in range(3):
            await budgets.tick()
        opened = sorted(k for k in await alerts.open_keys() if k.startswith("budget:"))
        assert [k.split(":")[4] for k in opened] == ["100", "80"]
        # A restarted server (fresh alerts, same database) does not send them again.
        again = Alerts(DbEpisodeStore(db))
        await again.start()
        assert not await again.open(opened[0], "budget", "", "x", {})
        # A period that is over: its episodes are resolved when the next one begins.
        stale = "budget:project:daily:1999-01-01:100:default"
        assert await alerts.open(stale, "budget", "", "last period", {})
        budgets._ids = ("1999-01-01", "1999-01")  # what the service saw then
        await budgets.tick()
        still = sorted(k for k in await alerts.open_keys() if k.startswith("budget:"))
        assert still == opened  # today's stay open, yesterday's is resolved
    finally:
        await budgets.close()
        await alerts.aclose()
