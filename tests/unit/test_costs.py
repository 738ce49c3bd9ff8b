"""The price catalog, replica uptime and cost reports against a real SQLite database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from modelport.control import costs, prices
from modelport.control.times import parse_time
from modelport.control.uptime import ReplicaUptime, hardware_of
from modelport.core.errors import InvalidRequest, NotFound
from modelport.observability.pricing import Price, PriceBook
from modelport.store import Database
from modelport.store.tables import (
    ApiKeyRow,
    EndpointRow,
    ModelRow,
    ModelVersionRow,
    PriceRow,
    ReplicaUptimeRow,
    UsageRollupRow,
)

T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)  # an hour boundary, in the past
HOUR = timedelta(hours=1)
USD = 1_000_000_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'modelport.db'}")
    database.migrate()
    with database.session() as session:
        model = ModelRow(name="breast-cancer", task="tabular")
        session.add(model)
        session.flush()
        version = ModelVersionRow(
            model_id=model.id, version=3, runtime="onnx", artifact_digest="sha256:" + "0" * 64
        )
        session.add(version)
        session.flush()
        session.add(
            EndpointRow(
                name="bc",
                model_ref="breast-cancer:3",
                version_id=version.id,
                intent={"resources": {"hardware": "gpu-l4"}},
            )
        )
        session.add(
            ApiKeyRow(id="k1", prefix="mp_", key_hash="h1", project="p", name="n", team="a")
        )
    yield database
    database.close()


def _count(db: Database, table: type) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


# -- price catalog -----------------------------------------------------------------------------


def test_prices_are_stored_exactly_and_loaded_into_the_book(db: Database) -> None:
    with db.session() as session:
        rows = prices.set_prices(session, model="breast-cancer@3", prices={"per_1k_rows": "0.002"})
        assert (rows[0].kind, rows[0].target, rows[0].nanousd) == (
            "model_version",
            "breast-cancer:3",
            2_000_000,
        )
        prices.set_prices(session, hardware="gpu-l4", prices={"per_hour": "0.85"})
    book = PriceBook()
    prices.refresh(db, book)
    now = datetime.now(UTC).timestamp() + 1
    assert book.price_at("model_version", "breast-cancer:3", "per_1k_rows", now) == 2_000_000
    assert book.price_at("hardware", "gpu-l4", "per_hour", now) == 850_000_000


def test_a_future_price_takes_over_at_its_time(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        prices.set_prices(session, endpoint="bc", prices={"per_image": "1"}, now=now)
        prices.set_prices(
            session,
            endpoint="bc",
            prices={"per_image": "2"},
            effective_from=now + HOUR,
            now=now,
        )
    book = PriceBook()
    prices.refresh(db, book)
    t = now.timestamp()
    assert book.price_at("endpoint", "bc", "per_image", t + 60) == USD
    assert book.price_at("endpoint", "bc", "per_image", t + 3601) == 2 * USD


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"endpoint": "nope", "prices": {"per_image": "1"}}, NotFound, "endpoint"),
        ({"model": "breast-cancer:9", "prices": {"per_image": "1"}}, NotFound, "model"),
        ({"model": "nope:1", "prices": {"per_image": "1"}}, NotFound, "model"),
        ({"model": "breast-cancer", "prices": {"per_image": "1"}}, InvalidRequest, "model"),
        ({"hardware": "GPU!", "prices": {"per_hour": "1"}}, InvalidRequest, "hardware"),
        ({"prices": {"per_image": "1"}}, InvalidRequest, "endpoint"),
        ({"endpoint": "bc", "hardware": "cpu", "prices": {}}, InvalidRequest, "hardware"),
        ({"endpoint": "bc", "prices": {}}, InvalidRequest, "prices"),
        ({"endpoint": "bc", "prices": {"per_row": "1"}}, InvalidRequest, "prices.per_row"),
        ({"hardware": "cpu", "prices": {"per_image": "1"}}, InvalidRequest, "prices.per_image"),
        ({"endpoint": "bc", "prices": {"per_hour": "1"}}, InvalidRequest, "prices.per_hour"),
        (
            {"endpoint": "bc", "prices": {"per_image": "1", "per_1k_rows": "-0.01"}},
            InvalidRequest,
            "prices.per_1k_rows",
        ),
        ({"endpoint": "bc", "prices": {"per_image": "1e-12"}}, InvalidRequest, "prices.per_image"),
        (
            {"endpoint": "bc", "prices": {"per_image": "1"}, "effective_from": T0},
            InvalidRequest,
            "effective_from",
        ),
    ],
)
def test_bad_prices_are_refused_naming_the_field_and_nothing_is_stored(
    db: Database, kwargs: dict, error: type, param: str
) -> None:
    with pytest.raises(error) as caught, db.session() as session:
        prices.set_prices(session, **kwargs)
    assert caught.value.details["param"] == param
    assert _count(db, PriceRow) == 0


# -- replica uptime ----------------------------------------------------------------------------


def test_hardware_of_an_intent() -> None:
    assert hardware_of(None) == "cpu"
    assert hardware_of({"resources": {"hardware": "auto"}}) == "cpu"
    assert hardware_of({"resources": {"hardware": "gpu-l4"}}) == "gpu-l4"
    assert hardware_of({"resources": {"hardware": "GPU-L4"}}) == "gpu-l4"  # as prices name it


def test_uptime_opens_and_closes_replica_intervals(db: Database) -> None:
    async def run() -> None:
        uptime = ReplicaUptime(db, heartbeat_s=0.05)
        await uptime.start()
        uptime.set_replicas("bc@r1", 2)
        await asyncio.sleep(0.2)  # a few heartbeats: running intervals are seen later
        with db.session() as session:
            running = session.scalars(select(ReplicaUptimeRow)).all()
        assert len(running) == 2
        assert all(r.stopped_at is None and r.seen_at > r.started_at for r in running)
        uptime.set_replicas("bc@r1", 1)  # scaled down: replica 1 stops
        uptime.set_replicas("bc@r1", 0)
        await uptime.close()

    asyncio.run(run())
    with db.session() as session:
        rows = session.scalars(select(ReplicaUptimeRow).order_by(ReplicaUptimeRow.id)).all()
    assert [(r.endpoint, r.revision, r.replica, r.hardware) for r in rows] == [
        ("bc", "r1", 0, "gpu-l4"),
        ("bc", "r1", 1, "gpu-l4"),
    ]
    assert all(r.stopped_at is not None and r.stopped_at > r.started_at for r in rows)
    assert rows[1].stopped_at <= rows[0].stopped_at  # type: ignore[operator]


def test_intervals_left_open_by_a_crash_close_at_the_last_time_seen(db: Database) -> None:
    seen = T0 + timedelta(minutes=42)
    with db.session() as session:
        session.add(
            ReplicaUptimeRow(
                endpoint="bc", revision="r1", replica=0, hardware="cpu", started_at=T0, seen_at=seen
            )
        )
    assert ReplicaUptime(db).recover() == 1
    with db.session() as session:
        row = session.scalars(select(ReplicaUptimeRow)).one()
    assert row.stopped_at == seen


# -- reports -----------------------------------------------------------------------------------


def _rollup(hour: datetime, team: str, customer: str, upstream_ms: float, cost: int, **kw: str):
    return UsageRollupRow(
        granularity="hour",
        bucket_start=hour,
        endpoint=kw.get("endpoint", "bc"),
        revision=kw.get("revision", "r1"),
        model_version=3,
        task="tabular",
        team=team,
        project="p",
        key_id=kw.get("key_id", "k1"),
        customer=customer,
        requests=1,
        slo_requests=1,
        errors=0,
        slow=0,
        input_tokens=0,
        output_tokens=0,
        audio_seconds=0.0,
        images=0,
        rows=10,
        latency_ms_sum=upstream_ms,
        upstream_ms_sum=upstream_ms,
        cost_nanousd=cost,
    )


@pytest.fixture
def history(db: Database) -> PriceBook:
    """Three hours of one replica on gpu-l4 at $1/h (then $3/h from 12:30); traffic in the
    first hour only (team a 3/4 of the busy time, team b 1/4), in the third as a 2:1 split."""
    with db.session() as session:
        session.add_all(
            [
                _rollup(T0, "a", "acme", 300.0, 7),
                _rollup(T0, "b", "zeta", 100.0, 5),
                _rollup(T0 + 2 * HOUR, "a", "acme", 20.0, 1),
                _rollup(T0 + 2 * HOUR, "b", "acme", 10.0, 1),
                ReplicaUptimeRow(
                    endpoint="bc",
                    revision="r1",
                    replica=0,
                    hardware="gpu-l4",
                    started_at=T0,
                    seen_at=T0 + 3 * HOUR,
                    stopped_at=T0 + 3 * HOUR,
                ),
            ]
        )
    return PriceBook(
        [
            Price("hardware", "gpu-l4", "per_hour", USD, (T0 - HOUR).timestamp()),
            Price("hardware", "gpu-l4", "per_hour", 3 * USD, (T0 + 2.5 * HOUR).timestamp()),
        ]
    )


def _report(db: Database, book: PriceBook, by: str, **filters: str) -> dict:
    with db.session() as session:
        return costs.cost_report(
            session,
            book,
            by=by,
            since=T0,
            until=T0 + 3 * HOUR,
            filters=costs.CostFilters(**filters),
            now=T0 + 10 * HOUR,
        )


def _nano(row: dict, part: str) -> int:
    return int(row[part]["nanousd"])


def test_compute_is_allocated_by_busy_time_and_idle_hours_stand_apart(
    db: Database, history: PriceBook
) -> None:
    report = _report(db, history, "team")
    by_team = {row["team"]: row for row in report["rows"]}
    # Hour 1: $1 split 3:1. Hour 2: idle ($1). Hour 3: $0.5 + $1.5 = $2 split 2:1.
    assert _nano(by_team["a"], "compute") == 750_000_000 + 1_333_333_333
    assert _nano(by_team["b"], "compute") == 250_000_000 + 666_666_667
    assert _nano(by_team["a"], "unit") == 8
    assert report["idle"]["nanousd"] == USD
    assert report["idle"]["revisions"] == [
        {
            "endpoint": "bc",
            "revision": "r1",
            "nanousd": USD,
            "usd": "1.000000000",
            "replica_hours": 1.0,
        }
    ]
    # Allocated + idle is every revision's compute cost, to the nano-USD.
    assert report["compute"] == [
        {
            "endpoint": "bc",
            "revision": "r1",
            "nanousd": 4 * USD,
            "usd": "4.000000000",
            "replica_hours": 3.0,
        }
    ]
    totals = report["totals"]
    assert _nano(totals, "compute") + _nano(totals, "idle") == 4 * USD
    assert _nano(totals, "total") == 4 * USD + 14
    assert by_team["a"]["total"]["usd"] == "2.083333341"


def test_a_consumer_filter_keeps_shares_of_all_traffic_and_no_idle(
    db: Database, history: PriceBook
) -> None:
    report = _report(db, history, "customer", team="a")
    assert [row["customer"] for row in report["rows"]] == ["acme"]
    assert _nano(report["rows"][0], "compute") == 750_000_000 + 1_333_333_333
    assert report["idle"]["nanousd"] == 0


def test_what_team_a_spent_on_an_endpoint_for_a_customer(db: Database, history: PriceBook) -> None:
    report = _report(db, history, "revision", team="b", endpoint="bc", customer="acme")
    assert report["rows"] == [
        {
            "endpoint": "bc",
            "revision": "r1",
            "requests": 1,
            "unit": {"nanousd": 1, "usd": "0.000000001"},
            "compute": {"nanousd": 666_666_667, "usd": "0.666666667"},
            "total": {"nanousd": 666_666_668, "usd": "0.666666668"},
            "outcome": None,  # the endpoint has no applied intent
        }
    ]


def test_a_report_window_is_whole_hours(db: Database, history: PriceBook) -> None:
    with db.session() as session:
        report = costs.cost_report(
            session,
            history,
            by="endpoint",
            since=T0 + timedelta(minutes=10),
            until=T0 + timedelta(minutes=50),
            now=T0 + 10 * HOUR,
        )
    assert (report["since"], report["until"]) == (T0.isoformat(), (T0 + HOUR).isoformat())
    assert _nano(report["rows"][0], "compute") == USD


def test_an_open_interval_is_costed_up_to_now(db: Database) -> None:
    with db.session() as session:
        session.add(
            ReplicaUptimeRow(
                endpoint="bc", revision="r1", replica=0, hardware="cpu", started_at=T0, seen_at=T0
            )
        )
    book = PriceBook([Price("hardware", "cpu", "per_hour", USD, 0.0)])
    with db.session() as session:
        report = costs.cost_report(
            session, book, by="endpoint", since=T0, until=T0 + 5 * HOUR, now=T0 + 1.5 * HOUR
        )
    assert report["idle"]["nanousd"] == 1_500_000_000


@pytest.mark.parametrize(
    ("by", "filters", "error", "param"),
    [
        ("color", {}, InvalidRequest, "by"),
        ("team", {"team": "nobody"}, NotFound, "team"),
        ("team", {"endpoint": "nowhere"}, NotFound, "endpoint"),
        ("team", {"customer": "stranger"}, NotFound, "customer"),
        ("team", {"key": "k9"}, NotFound, "key"),
    ],
)
def test_bad_reports_name_the_field(
    db: Database, history: PriceBook, by: str, filters: dict, error: type, param: str
) -> None:
    with pytest.raises(error) as caught:
        _report(db, history, by, **filters)
    assert caught.value.details["param"] == param


def test_parse_time() -> None:
    now = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)
    assert parse_time("24h", "since", now) == now - timedelta(hours=24)
    assert parse_time("7d", "since", now) == now - timedelta(days=7)
    assert parse_time("month", "since", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_time("2026-11-02", "since", now) == datetime(2026, 11, 2, tzinfo=UTC)
    for bad in ("yesterday-ish", "99999999999w", "0001-01-01", "9999-12-31T23:59:59", ""):
        with pytest.raises(InvalidRequest) as caught:
            parse_time(bad, "until", now)
        assert caught.value.details["param"] == "until"
