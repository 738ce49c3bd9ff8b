"""Error budgets, burn rates and the SRE workbook's alert rules, from counts and from rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modelport.control import endpoints as endpoint_service
from modelport.control import registry
from modelport.control.alerts import DbEpisodeStore, list_episodes
from modelport.control.slo import SloBook, endpoint_slo, spans, window_counts
from modelport.core.errors import NotFound
from modelport.core.intent import parse_intent
from modelport.observability.alerts import Alerts
from modelport.observability.slo import (
    BURN_RULES,
    BURN_WINDOWS,
    Counts,
    Objective,
    SloSpec,
    budget_remaining,
    burn_rate,
    evaluate,
    format_window,
)
from modelport.store import Database
from modelport.store.tables import (
    ROLLUP_DIMENSIONS,
    AlertEpisodeRow,
    ModelVersionRow,
    UsageRollupRow,
)

DAY = 86_400.0
NOW = datetime(2026, 11, 30, 12, 30, 15, tzinfo=UTC)


# -- pure arithmetic -------------------------------------------------------------------------


def test_allowed_bad_fraction_per_objective() -> None:
    assert Objective.availability(99.9).allowed == 0.001
    assert Objective.availability(99.0).allowed == 0.01
    assert Objective.latency(250).allowed == 0.05
    # 100 % leaves no budget to divide by: the smallest one measured is one in a million.
    assert Objective.availability(100).allowed == 1e-6


def test_budget_remaining_and_burn_rate() -> None:
    availability = Objective.availability(99.0)  # 1 % may fail
    assert burn_rate(Counts(), availability) == 0.0
    assert budget_remaining(Counts(), availability) == 1.0  # no events spend nothing
    assert budget_remaining(Counts(1000, 5, 0), availability) == pytest.approx(0.5)
    assert budget_remaining(Counts(1000, 10, 0), availability) == pytest.approx(0.0)
    assert budget_remaining(Counts(1000, 30, 0), availability) == pytest.approx(-2.0)
    assert burn_rate(Counts(1000, 30, 0), availability) == pytest.approx(3.0)
    latency = Objective.latency(100)  # 5 % may be slow
    assert burn_rate(Counts(1000, 30, 100), latency) == pytest.approx(2.0)  # errors don't count
    assert budget_remaining(Counts(10, 0, 10), latency) == pytest.approx(-19.0)


def test_workbook_thresholds_for_a_30_day_window() -> None:
    thresholds = {rule.name: rule.threshold(30 * DAY) for rule in BURN_RULES}
    assert thresholds == pytest.approx({"1h/5m": 14.4, "6h/30m": 6.0, "3d/6h": 1.0})
    assert [rule.severity for rule in BURN_RULES] == ["page", "page", "ticket"]
    # The same budget shares over a 28-day window: 2 % of it in an hour is 13.44x.
    assert BURN_RULES[0].threshold(28 * DAY) == pytest.approx(13.44)


def _spec(*objectives: Objective, days: float = 30) -> SloSpec:
    return SloSpec(tuple(objectives), days * DAY)


def _burn(rates: dict[str, float], objective: Objective, valid: int = 100_000) -> dict:
    """Counts per window that burn ``objective`` at ``rates`` (unlisted windows: none)."""
    counts = {}
    for window, rate in rates.items():
        bad = round(rate * objective.allowed * valid)
        counts[window] = (
            Counts(valid, bad, 0) if objective.name == "availability" else Counts(valid, 0, bad)
        )
    return counts


@pytest.mark.parametrize(
    ("rates", "firing"),
    [
        # A fast burn in both the long and the short window: page.
        ({"1h": 15, "5m": 15}, ["1h/5m"]),
        # Burning hard for the last hour but it stopped minutes ago: the short window resets.
        ({"1h": 15, "5m": 0.5}, []),
        # A spike only in the last five minutes: the long window is not convinced.
        ({"1h": 2, "5m": 50}, []),
        # Slower, sustained: the 6 h page; with it the 3 d ticket (1x) fires too.
        ({"6h": 7, "30m": 7, "3d": 2}, ["6h/30m", "3d/6h"]),
        # A slow leak over days: a ticket.
        ({"3d": 1.5, "6h": 1.2}, ["3d/6h"]),
        ({"3d": 0.9, "6h": 1.2}, []),
    ],
)
def test_which_rule_fires(rates: dict[str, float], firing: list[str]) -> None:
    objective = Objective.availability(99.9)
    status = evaluate("e", _spec(objective), Counts(), _burn(rates, objective), at=0)
    assert [rule.name for rule in status.objectives[0].firing] == firing
    assert set(status.objectives[0].burn_rates) == set(BURN_WINDOWS)


def test_alert_conditions_page_wins_over_ticket_and_budget_levels() -> None:
    latency = Objective.latency(100)
    burn = _burn({"1h": 20, "5m": 20, "6h": 20, "30m": 20, "3d": 20}, latency)
    # Over the window, 30 % of events were slow: the budget is 5x overspent.
    status = evaluate("e", _spec(latency), Counts(1000, 0, 300), burn, at=0)
    assert status.budget_remaining == pytest.approx(-5.0)
    conditions = {c.key: c for c in status.alerts()}
    assert set(conditions) == {
        "slo:e:latency:burn:page",  # the ticket waits while a page is open
        "slo:e:latency:budget:0.5",
        "slo:e:latency:budget:0.25",
        "slo:e:latency:budget:0",
    }
    page = conditions["slo:e:latency:burn:page"]
    assert page.kind == "slo_burn"
    assert page.data["windows"] == ["1h/5m", "6h/30m", "3d/6h"]
    assert "burning 20.0x over 1h" in page.summary
    assert conditions["slo:e:latency:budget:0"].kind == "slo_budget"


def test_each_objective_separately_and_the_worst_decides() -> None:
    spec = SloSpec.of(availability=99.0, p95_latency_ms=200, window_s=None)
    assert spec is not None and spec.window_s == 28 * DAY
    assert spec.latency_target_ms == 200
    # 0.5 % failed (half the availability budget), 1 % slow (a fifth of the latency one).
    status = evaluate("e", spec, Counts(1000, 5, 10), {}, at=0)
    by_name = {s.objective.name: s for s in status.objectives}
    assert by_name["availability"].budget_remaining == pytest.approx(0.5)
    assert by_name["latency"].budget_remaining == pytest.approx(0.8)
    assert status.budget_remaining == pytest.approx(0.5)
    assert status.sli == pytest.approx(1 - 15 / 1000)
    assert [c.key for c in status.alerts()] == ["slo:e:availability:budget:0.5"]
    body = status.to_dict()
    assert body["window"] == "28d"
    assert [o["objective"] for o in body["objectives"]] == ["availability", "latency"]


def test_no_objective_means_no_slo() -> None:
    assert SloSpec.of(availability=None, p95_latency_ms=None) is None


def test_intent_window() -> None:
    base = "endpoint: e\ntask: tabular\nmodel: m:1\n"
    assert parse_intent(base).slo.window_s is None
    assert "window" not in parse_intent(base).to_dict()["slo"]  # old digests stay the same
    assert parse_intent(base + "slo: {window: 7d}\n").slo.window_s == 7 * DAY
    assert parse_intent(base + "slo: {window: 12h}\n").slo.window_s == 12 * 3600
    for bad in ("30m", "400d", "soon", "true"):
        with pytest.raises(Exception, match=r"slo.window \(line 4\): must be a duration from 1h"):
            parse_intent(base + f"slo: {{window: {bad}}}\n")
    assert format_window(28 * DAY) == "28d"
    assert format_window(90 * 60) == "90m"


# -- windows over rollups --------------------------------------------------------------------


def test_spans_cover_the_window_with_the_coarsest_buckets() -> None:
    start, end = NOW - timedelta(days=3), NOW
    got = spans(start, end)
    # Contiguous, from the minute the window starts in up to its end.
    edges = sorted((lo, hi) for _, lo, hi in got)
    assert edges[0][0] == datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    assert edges[-1][1] == end
    assert all(a[1] == b[0] for a, b in pairwise(edges))
    assert {g for g, _, _ in got} == {"minute", "hour", "day"}
    assert ("day", datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)) in got
    assert spans(NOW - timedelta(minutes=5), NOW) == [
        ("minute", datetime(2026, 11, 30, 12, 25, tzinfo=UTC), NOW)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'slo.db'}")
    database.migrate()
    return database


def _floor(at: datetime, granularity: str) -> datetime:
    if granularity == "minute":
        return at.replace(second=0, microsecond=0)
    if granularity == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _add(db: Database, endpoint: str, at: datetime, valid: int, errors: int = 0, slow: int = 0):
    """Events as the usage loader rolls them up: into a minute, an hour and a day row."""
    with db.session() as session:
        for granularity in ("minute", "hour", "day"):
            bucket = _floor(at, granularity)
            row = session.scalar(
                select(UsageRollupRow).where(
                    UsageRollupRow.granularity == granularity,
                    UsageRollupRow.bucket_start == bucket,
                    UsageRollupRow.endpoint == endpoint,
                )
            )
            if row is None:
                dims: dict[str, Any] = dict.fromkeys(ROLLUP_DIMENSIONS, "")
                dims.update(endpoint=endpoint, model_version=1)
                row = UsageRollupRow(granularity=granularity, bucket_start=bucket, **dims)
                for name in ("requests", "slo_requests", "errors", "slow", "input_tokens"):
                    setattr(row, name, 0)
                row.output_tokens = row.images = row.rows = row.cost_nanousd = 0
                row.audio_seconds = row.latency_ms_sum = row.upstream_ms_sum = 0.0
                session.add(row)
            row.requests += valid
            row.slo_requests += valid
            row.errors += errors
            row.slow += slow


def test_window_counts_are_exact_to_the_minute(db: Database) -> None:
    # One event per 10 minutes over four days, and one too old to count.
    minutes = range(0, 4 * 24 * 60, 10)
    for m in minutes:
        _add(db, "e", NOW - timedelta(minutes=m), 1, errors=int(m % 20 == 0))
    _add(db, "other", NOW, 7)
    with db.session() as session:
        for window in ("5m", "1h", "6h", "1d", "3d"):
            seconds = BURN_WINDOWS[window]
            start = NOW - timedelta(seconds=seconds)
            expected = [m for m in minutes if NOW - timedelta(minutes=m) >= _floor(start, "minute")]
            got = window_counts(session, ["e"], start, NOW + timedelta(seconds=1))
            assert got["e"].valid == len(expected), window
            assert got["e"].errors == sum(1 for m in expected if m % 20 == 0), window
            assert "other" not in got


def _endpoint(db: Database, name: str, intent_yaml: str | None) -> None:
    with db.session() as session:
        if registry.list_models(session) == []:
            model = registry.create_model(session, name="m", task="tabular")
            session.add(
                ModelVersionRow(
                    model=model, version=1, runtime="sklearn", artifact_digest="sha256:" + "0" * 64
                )
            )
            session.flush()
        intent = None
        if intent_yaml is not None:
            intent = parse_intent(f"endpoint: {name}\ntask: tabular\nmodel: m:1\n{intent_yaml}")
        endpoint_service.create_endpoint(session, name=name, model="m:1", replicas=1, intent=intent)


def test_endpoint_slo_from_rollups(db: Database) -> None:
    _endpoint(db, "e", "slo: {availability: 99, p95_latency_ms: 50, window: 7d}\n")
    _endpoint(db, "plain", None)
    for minutes in (1, 30, 120):
        _add(db, "e", NOW - timedelta(minutes=minutes), 100, errors=2, slow=10)
    _add(db, "e", NOW - timedelta(days=8), 100, errors=100)  # outside the 7-day window
    with db.session() as session:
        status = endpoint_slo(session, "e", NOW.timestamp())
        assert endpoint_slo(session, "plain", NOW.timestamp()) is None
        with pytest.raises(NotFound, match="endpoint 'nope' does not exist"):
            endpoint_slo(session, "nope", NOW.timestamp())
    assert status is not None
    availability, latency = status.objectives
    assert availability.counts == Counts(300, 6, 30)
    assert availability.budget_remaining == pytest.approx(1 - 0.02 / 0.01)
    assert latency.budget_remaining == pytest.approx(1 - 0.1 / 0.05)
    assert availability.burn_rates["5m"] == pytest.approx(2.0)
    assert availability.burn_rates["1h"] == pytest.approx(2.0)  # 1 and 30 minutes ago
    assert latency.burn_rates["6h"] == pytest.approx(2.0)


async def test_slo_book_opens_each_episode_once_and_closes_it(db: Database) -> None:
    _endpoint(db, "e", "slo: {p95_latency_ms: 0.001}\n")
    now = [NOW.timestamp()]
    alerts = Alerts(DbEpisodeStore(db))
    book = SloBook(db, alerts, clock=lambda: now[0])
    await book.evaluate()
    assert book.latency_target_ms("e") == 0.001
    assert book.latency_target_ms("plain") is None
    assert book.snapshot()["e"].budget_remaining == 1.0  # no events yet
    _add(db, "e", NOW - timedelta(seconds=10), 20, slow=20)
    await book.evaluate()
    await book.evaluate()  # a second pass opens nothing again
    await alerts.drain()
    with db.session() as session:
        open_keys = {e.key for e in list_episodes(session, state="open")}
    assert open_keys == {
        "slo:e:latency:burn:page",
        "slo:e:latency:budget:0.5",
        "slo:e:latency:budget:0.25",
        "slo:e:latency:budget:0",
    }
    # A restarted server loads the open episodes and does not open them again.
    again = Alerts(DbEpisodeStore(db))
    await again.start()
    await SloBook(db, again, clock=lambda: now[0]).evaluate()
    with db.session() as session:
        assert len(session.scalars(select(AlertEpisodeRow)).all()) == 4
    # Ten minutes later the 1h/5m rule resets, but 6h/30m still pages.
    now[0] += 600
    await book.evaluate()
    assert [r.name for r in book.snapshot()["e"].objectives[0].firing] == ["6h/30m", "3d/6h"]
    # Forty minutes later both short windows are clean: the slow burn the 6 h window still
    # shows becomes a ticket, and the page resolves once it has stayed clear for five
    # minutes (a rate hovering at a threshold is one episode). The spent budget stays spent.
    now[0] += 1800
    await book.evaluate()
    with db.session() as session:
        assert {e.key for e in list_episodes(session, state="open")} >= {
            "slo:e:latency:burn:page",
            "slo:e:latency:burn:ticket",
        }
    now[0] += 299
    await book.evaluate()
    with db.session() as session:
        assert "slo:e:latency:burn:page" in {e.key for e in list_episodes(session, state="open")}
    now[0] += 1
    await book.evaluate()
    await alerts.drain()
    with db.session() as session:
        episodes = {e.key: e for e in list_episodes(session)}
    assert episodes["slo:e:latency:burn:page"].state == "closed"
    assert episodes["slo:e:latency:burn:page"].close_delivery == "sent"  # no webhooks: done
    assert episodes["slo:e:latency:burn:ticket"].state == "open"
    assert episodes["slo:e:latency:budget:0"].state == "open"
    # The SLO removed from the intent: its alerts close.
    with db.session() as session:
        row = endpoint_service.get_endpoint(session, "e")
        row.intent = parse_intent("endpoint: e\ntask: tabular\nmodel: m:1\n").to_dict()
    await book.evaluate()
    assert book.latency_target_ms("e") is None
    with db.session() as session:
        assert list_episodes(session, state="open") == []
    await alerts.aclose()
    await again.aclose()
