"""Recommendations from usage the loader really stored (events and minute rollups in a migrated
database): what was observed, and what each kind of proposal says about it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelport.control import recommend
from modelport.control import usage as usage_reports
from modelport.control.recommend import Observed, observe, propose
from modelport.control.usage_loader import store_batch
from modelport.core.errors import Forbidden, InvalidRequest, NotFound
from modelport.core.intent import parse_intent
from modelport.core.settings import Settings
from modelport.core.usage import UsageRecord
from modelport.planning.catalog import load_catalog
from modelport.planning.planner import HOURS_PER_MONTH, EnvironmentOption
from modelport.planning.profiles import Profile, ProfilePoint
from modelport.store import ArtifactStore, Database
from modelport.store.tables import EndpointRow, ModelRow, ModelVersionRow

NOW = datetime(2026, 11, 30, 12, 30, 15, tzinfo=UTC)
CATALOG = load_catalog()
CPU = CATALOG.get("cpu").hourly_usd
SANDBOX = EnvironmentOption("sandbox", "shared", ("cpu", "t4"), ("public", "internal"))
_serial = iter(range(10**9))


def intent(extra: str = "", task: str = "tabular") -> str:
    return f"endpoint: bc\ntask: {task}\nmodel: breast-cancer:1\n{extra}"


def calls(
    count: int,
    at: datetime,
    *,
    spread_s: float = 50.0,
    latency_ms: float = 3.0,
    upstream_ms: float = 2.0,
    status: int = 200,
    endpoint: str = "bc",
) -> list[UsageRecord]:
    """``count`` calls in the ``spread_s`` seconds after ``at``."""
    return [
        UsageRecord(
            request_id=f"req-{next(_serial)}",
            endpoint=endpoint,
            revision="r1",
            key_id="k1",
            project="default",
            customer="",
            status=status,
            latency_ms=latency_ms,
            upstream_ms=upstream_ms,
            at=at.timestamp() + spread_s * n / max(count, 1),
            model="breast-cancer",
            model_version=1,
            task="tabular",
        )
        for n in range(count)
    ]


def stored(db: Database, records: list[UsageRecord], days: float = 7) -> Observed:
    with db.session() as session:
        store_batch(session, records, latency_target_ms=lambda _endpoint: 100.0)
    start, end = recommend.window(days, NOW)
    with db.session() as session:
        return observe(session, "bc", start, end)


def minute(ago: int) -> datetime:
    return NOW.replace(second=0, microsecond=0) - timedelta(minutes=ago)


def test_observed_sums_peak_and_p95_come_from_what_was_stored(db: Database) -> None:
    records = (
        calls(30, minute(90), latency_ms=5.0)
        + calls(120, minute(30), latency_ms=5.0)  # the busiest minute: 2 rps
        + calls(10, minute(20), latency_ms=200.0)  # slow: over the 100 ms target
        + calls(5, minute(10), status=500)
        + calls(400, NOW - timedelta(days=9))  # before the window
        + calls(7, minute(5), endpoint="other")
    )
    seen = stored(db, records)
    assert seen.requests == 165
    assert seen.errors == 5
    assert seen.slow == 10
    assert seen.peak_rps == pytest.approx(2.0)
    assert seen.upstream_ms_mean == pytest.approx(2.0)
    # 160 successful calls by latency: 150 at 5 ms, 10 at 200 ms; rank ceil(0.95*160) = 152.
    assert seen.p95_ms == pytest.approx(200.0)
    assert seen.days == pytest.approx(7.0)


def test_an_over_provisioned_endpoint_gets_fewer_replicas(db: Database) -> None:
    seen = stored(db, calls(40, minute(3)))
    result = propose(
        parse_intent(intent("resources: {replicas: 3}\n")), seen, catalog=CATALOG, hardware="cpu"
    )
    assert result.basis == "observed"
    [proposal] = [p for p in result.proposals if p.kind.endswith("replicas")]
    assert proposal.kind == "fewer_replicas"
    assert proposal.diff == [
        {
            "field": "resources.replicas",
            "before": {"min": 3, "max": 3},
            "after": {"min": 1, "max": 1},
        }
    ]
    assert proposal.effect["monthly_usd"] == pytest.approx(-2 * CPU * HOURS_PER_MONTH, abs=0.01)
    assert "3 always run" in proposal.reason


def test_a_range_keeps_its_max_when_its_min_is_too_high(db: Database) -> None:
    seen = stored(db, calls(40, minute(3)))
    text = intent("resources: {replicas: {min: 2, max: 5}}\n")
    result = propose(parse_intent(text), seen, catalog=CATALOG, hardware="cpu")
    [proposal] = [p for p in result.proposals if p.kind == "fewer_replicas"]
    assert proposal.diff[0]["after"] == {"min": 1, "max": 5}


def test_an_under_provisioned_endpoint_gets_more_replicas(db: Database) -> None:
    # 50 rps at the busiest minute, 100 ms of model time each: 10 rps per replica, and
    # 50 x 1.3 / 10 = 6.5, so 7 replicas.
    seen = stored(db, calls(3000, minute(3), spread_s=59, latency_ms=120, upstream_ms=100))
    text = intent("resources: {replicas: {min: 1, max: 2}}\n")
    result = propose(parse_intent(text), seen, catalog=CATALOG, hardware="cpu")
    [proposal] = [p for p in result.proposals if p.kind.endswith("replicas")]
    assert proposal.kind == "more_replicas"
    assert proposal.diff[0]["after"] == {"min": 1, "max": 7}
    assert proposal.effect["monthly_usd"] == pytest.approx(5 * CPU * HOURS_PER_MONTH, abs=0.01)


def test_a_right_sized_endpoint_gets_no_replica_proposal(db: Database) -> None:
    seen = stored(db, calls(40, minute(3)))
    result = propose(parse_intent(intent()), seen, catalog=CATALOG, hardware="cpu")
    assert not [p for p in result.proposals if "replicas" in p.kind]


def test_no_traffic_at_all_proposes_scale_to_zero(db: Database) -> None:
    seen = stored(db, calls(50, NOW - timedelta(days=10)))  # all before the window
    assert seen.requests == 0
    result = propose(
        parse_intent(intent("resources: {replicas: 2}\n")), seen, catalog=CATALOG, hardware="cpu"
    )
    [proposal] = result.proposals
    assert proposal.kind == "scale_to_zero"
    assert proposal.diff[0]["after"] == {"min": 0, "max": 2}
    assert proposal.effect["monthly_usd"] == pytest.approx(-2 * CPU * HOURS_PER_MONTH, abs=0.01)
    # Already scaling to zero: nothing to propose.
    text = intent("resources: {replicas: {min: 0, max: 2}}\n")
    assert propose(parse_intent(text), seen, catalog=CATALOG, hardware="cpu").proposals == []


def test_a_busy_tabular_endpoint_without_batching_gets_batching(db: Database) -> None:
    seen = stored(db, calls(1800, minute(3), spread_s=59))  # 30 rps
    result = propose(parse_intent(intent()), seen, catalog=CATALOG, hardware="cpu")
    [proposal] = [p for p in result.proposals if p.kind == "enable_batching"]
    assert proposal.diff == [
        {"field": "batching", "before": None, "after": {"max_batch_size": 32, "max_wait_ms": 5.0}}
    ]
    batched = parse_intent(intent("batching: {max_batch_size: 8}\n"))
    assert not [
        p
        for p in propose(batched, seen, catalog=CATALOG, hardware="cpu").proposals
        if p.kind == "enable_batching"
    ]
    chat = parse_intent(intent(task="chat"))
    assert not [
        p
        for p in propose(chat, seen, catalog=CATALOG, hardware="cpu").proposals
        if p.kind == "enable_batching"
    ]


def test_slo_far_under_target_and_over_it(db: Database) -> None:
    seen = stored(db, calls(200, minute(3), latency_ms=4.0))
    relaxed = parse_intent(intent("slo: {p95_latency_ms: 500}\n"))
    kinds = {p.kind: p for p in propose(relaxed, seen, catalog=CATALOG, hardware="cpu").proposals}
    never = kinds["slo_never_at_risk"]
    assert never.diff == [{"field": "slo.p95_latency_ms", "before": 500.0, "after": 8.0}]
    tight = parse_intent(intent("slo: {p95_latency_ms: 2}\n"))
    kinds = {p.kind: p for p in propose(tight, seen, catalog=CATALOG, hardware="cpu").proposals}
    assert kinds["slo_at_risk"].diff[0]["after"] == 5.0  # ceil(4 x 1.2)
    assert "slo_never_at_risk" not in kinds


def test_too_many_errors_put_the_slo_at_risk(db: Database) -> None:
    seen = stored(db, calls(80, minute(3)) + calls(20, minute(2), status=500))
    kinds = [
        p.kind
        for p in propose(parse_intent(intent()), seen, catalog=CATALOG, hardware="cpu").proposals
    ]
    assert "slo_at_risk" in kinds


def _profile(hardware: str, rps: float, p95: float) -> Profile:
    points = (
        ProfilePoint(1, rps / 4, p95 / 2, p95 / 2, p95 / 2, 0),
        ProfilePoint(4, rps, p95, p95, p95, 0),
    )
    return Profile(hardware, points, {})


def test_a_bench_profile_is_preferred_and_cheaper_hardware_is_proposed(db: Database) -> None:
    seen = stored(db, calls(1200, minute(3), spread_s=59))  # 20 rps
    text = intent("slo: {p95_latency_ms: 100}\nresources: {hardware: t4, replicas: 1}\n")
    profiles = {"t4": _profile("t4", 400, 10), "cpu": _profile("cpu", 100, 40)}
    result = propose(
        parse_intent(text),
        seen,
        catalog=CATALOG,
        hardware="t4",
        environments=(SANDBOX,),
        profiles=profiles,
    )
    assert result.basis == "measured"
    [proposal] = [p for p in result.proposals if p.kind == "cheaper_hardware"]
    assert proposal.diff[0] == {"field": "resources.hardware", "before": "t4", "after": "cpu"}
    t4 = CATALOG.get("t4").hourly_usd
    assert proposal.effect["monthly_usd"] == pytest.approx((CPU - t4) * HOURS_PER_MONTH, abs=0.01)


def test_hardware_that_misses_the_slo_gets_faster_hardware(db: Database) -> None:
    seen = stored(db, calls(1200, minute(3), spread_s=59))  # 20 rps
    text = intent("slo: {p95_latency_ms: 30}\nresources: {hardware: cpu, replicas: 1}\n")
    profiles = {"t4": _profile("t4", 400, 10), "cpu": _profile("cpu", 100, 80)}
    result = propose(
        parse_intent(text),
        seen,
        catalog=CATALOG,
        hardware="cpu",
        environments=(SANDBOX,),
        profiles=profiles,
    )
    [proposal] = [p for p in result.proposals if p.kind == "faster_hardware"]
    assert proposal.diff[0] == {"field": "resources.hardware", "before": "cpu", "after": "t4"}
    assert proposal.effect["p95_ms"] is not None and proposal.effect["p95_ms"] <= 30
    assert any("cannot size on cpu" in note for note in result.notes)


@pytest.mark.parametrize("days", ["0", "-1", "91", "nan", "inf", "week", ""])
def test_bad_days_are_a_400_naming_days(days: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        recommend.check_days(days)
    assert caught.value.details["param"] == "days"
    assert recommend.check_days(None) == 7.0
    assert recommend.check_days("0.5") == 0.5


@pytest.fixture
def endpoint(db: Database) -> Iterator[Database]:
    with db.session() as session:
        model = ModelRow(name="breast-cancer", task="tabular")
        session.add(model)
        session.flush()
        version = ModelVersionRow(
            model_id=model.id, version=1, runtime="onnx", artifact_digest="sha256:" + "0" * 64
        )
        session.add(version)
        session.flush()
        applied = parse_intent(
            intent("outcome: Flag applications for review\nresources: {replicas: 3}\n")
        )
        session.add(
            EndpointRow(
                name="bc",
                model_ref="breast-cancer:1",
                version_id=version.id,
                replicas=3,
                intent=applied.to_dict(),
            )
        )
    yield db


def test_the_service_answers_per_endpoint_and_refuses_what_the_caller_may_not_read(
    endpoint: Database, tmp_path: Path
) -> None:
    db = endpoint
    with db.session() as session:
        store_batch(session, calls(40, NOW - timedelta(minutes=3)))
    settings = Settings(home=tmp_path)
    artifacts = ArtifactStore(settings.home / "artifacts")
    with db.session() as session:
        answer = recommend.recommendations(
            session, settings, artifacts, endpoint=None, days=7, may_read=lambda _r: True, now=NOW
        )
        [one] = answer["endpoints"]
        assert one["endpoint"] == "bc" and one["outcome"] == "Flag applications for review"
        assert one["observed"]["requests"] == 40
        assert [p["kind"] for p in one["proposals"]] == ["fewer_replicas"]
        hidden = recommend.recommendations(
            session, settings, artifacts, endpoint=None, days=7, may_read=lambda _r: False, now=NOW
        )
        assert hidden["endpoints"] == []
        with pytest.raises(Forbidden) as refused:
            recommend.recommendations(
                session, settings, artifacts, endpoint="bc", days=7, may_read=lambda _r: False
            )
        assert refused.value.details["param"] == "endpoint"
        with pytest.raises(NotFound) as missing:
            recommend.recommendations(
                session, settings, artifacts, endpoint="nope", days=7, may_read=lambda _r: True
            )
        assert missing.value.details["param"] == "endpoint"


def test_usage_and_cost_rows_carry_the_endpoints_outcome(endpoint: Database) -> None:
    db = endpoint
    with db.session() as session:
        store_batch(session, calls(5, NOW - timedelta(minutes=3)))
        store_batch(session, calls(2, NOW - timedelta(minutes=3), endpoint="gone"))
        report = usage_reports.report(session, by="endpoint", since="1h", now=NOW)
        by_team = usage_reports.report(session, by="team", since="1h", now=NOW)
    outcomes = {row["endpoint"]: row["outcome"] for row in report["rows"]}
    assert outcomes == {"bc": "Flag applications for review", "gone": None}
    assert "outcome" not in by_team["rows"][0]


def test_an_endpoint_whose_stored_intent_does_not_parse_is_described_not_a_500(
    endpoint: Database, tmp_path: Path
) -> None:
    db = endpoint
    with db.session() as session:
        row = recommend.endpoint_or_404(session, "bc")
        row.intent = {"endpoint": "bc", "project": "default"}  # written before a schema change
        store_batch(session, calls(40, NOW - timedelta(minutes=3)))
    settings = Settings(home=tmp_path)
    with db.session() as session:
        answer = recommend.recommendations(
            session,
            settings,
            ArtifactStore(tmp_path / "artifacts"),
            endpoint="bc",
            days=7,
            may_read=lambda _r: True,
            now=NOW,
        )
    [one] = answer["endpoints"]
    assert any("does not parse" in note for note in one["notes"])
    [fewer] = one["proposals"]
    assert fewer["diff"][0]["before"] == {"min": 3, "max": 3}  # what runs: 3 replicas
