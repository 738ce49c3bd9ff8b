"""``modelport plan`` on a real server: a plan sized from a ``modelport bench`` profile
predicts the p95 then measured at the planned load (within 30%); the JSON has every field;
an impossible intent says why and what comes closest; bad input is a 4xx naming the field
and line, with nothing stored.

The machine these tests run on is small and shared (2 cores, other suites beside): a
neighbour's burst can stall a replica for a second. So the p95 measured at the planned load
is the median of 3 short open-loop runs (each run's p95 is already the median of its thirds,
as in a profile's open-loop points), and a whole bench-plan-measure round that misses is
tried again, up to 3 rounds: noise from neighbours comes and goes within seconds, a wrong
prediction does not.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError
from tests.integration.conftest import BREAST_CANCER_ONLY, RunningServer, demo_server

pytestmark = pytest.mark.integration

runner = CliRunner()
TOLERANCE = 0.30
ROUNDS = 3
RUNS = 3
SECONDS = 3  # each bench level and each run at the planned rate

INTENT = """\
endpoint: breast-cancer
task: tabular
model: breast-cancer:1
traffic:
  peak_rps: {peak}
slo:
  p95_latency_ms: {slo}
budget:
  monthly_usd: {budget}
environment: sandbox
resources:
  hardware: cpu
  replicas: {{min: 1, max: 16}}
"""


def intent(peak: float = 50.0, slo: float = 1000.0, budget: float = 10_000.0) -> str:
    return INTENT.format(peak=peak, slo=slo, budget=budget)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("plan") / "home"
    with demo_server(home, "breast-cancer", env=BREAST_CANCER_ONLY) as running:
        yield running


@pytest.fixture(scope="module")
def admin(served: RunningServer) -> Iterator[Client]:
    with served.client() as client:
        yield client


@pytest.fixture(scope="module")
def profiled(admin: Client) -> dict[str, Any]:
    """A stored profile of the demo model, so plans have a measured basis."""
    return admin.bench("breast-cancer", concurrency=[1, 2, 4], duration="1s")


def _round(admin: Client) -> dict[str, Any]:
    """Bench, plan a peak that needs more than one replica, then measure the p95 of one
    replica at the planned per-replica rate."""
    profile = admin.bench("breast-cancer", concurrency=[1, 2, 4], duration=SECONDS)
    top = max(point["rps"] for point in profile["points"] if point["concurrency"])
    # What one replica sustains within the SLO, read back from a light plan's headroom
    # (headroom = 1 - load / capacity) ...
    light = admin.plan(intent(peak=round(0.1 * top, 1)))
    capacity = 0.1 * top / light["replicas"]["min"] / (1 - light["headroom"])
    # ... then a peak that, with the planner's 30% headroom, is more than one replica
    # sustains: 2 replicas, each at 40% of what it can do.
    peak = round(0.8 * capacity, 1)
    plan = admin.plan(intent(peak=peak))
    assert plan["feasible"] is True, plan
    assert (plan["basis"], plan["hardware"]) == ("measured", "cpu"), plan
    replicas = plan["replicas"]["min"]
    assert replicas >= 2, plan
    rate = peak / replicas
    runs = [admin.bench("breast-cancer", rate=rate, duration=SECONDS) for _ in range(RUNS)]
    points = [run["points"][0] for run in runs]
    for point in points:
        assert point["errors"] == 0, point
        assert point["requests"] == int(rate * SECONDS), point  # the load was offered
    assert all(run["id"] is None for run in runs)  # a check at one rate is not a profile
    measured = statistics.median(point["p95_ms"] for point in points)
    predicted = plan["predicted_p95_ms"]
    return {
        "profile": [(p["concurrency"], p["rps"], p["p95_ms"]) for p in profile["points"]],
        "capacity": round(capacity, 1),
        "peak": peak,
        "replicas": replicas,
        "rate": round(rate, 1),
        "predicted": predicted,
        "measured": [p["p95_ms"] for p in points],
        "error": abs(measured - predicted) / predicted,
    }


def test_the_p95_predicted_from_a_bench_profile_holds_at_the_planned_load(admin: Client) -> None:
    rounds = []
    for _ in range(ROUNDS):
        rounds.append(_round(admin))
        if rounds[-1]["error"] <= TOLERANCE:
            break
    print(json.dumps(rounds))  # shown with -s: how close the prediction came
    assert rounds[-1]["error"] <= TOLERANCE, json.dumps(rounds, indent=1)


def test_plan_json_has_every_field(served: RunningServer, profiled: dict[str, Any]) -> None:
    result = _cli(served, "--format", "json", text=intent(peak=20))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["feasible"] is True and plan["reason"] is None
    assert (plan["environment"], plan["hardware"], plan["devices"]) == ("sandbox", "cpu", 1)
    assert plan["environment_reason"]
    assert plan["replicas"]["min"] >= 1 and plan["replicas"]["max"] >= plan["replicas"]["min"]
    assert plan["predicted_p95_ms"] > 0 and 0 <= plan["headroom"] < 1
    assert plan["monthly_usd"] > 0 and plan["basis"] == "measured"
    assert isinstance(plan["rejected_cheaper"], list)
    assert isinstance(plan["rejected_faster"], list)
    assert plan["closest"] is None
    assert plan["policy"]["allowed"] is True and plan["policy"]["denials"] == []
    assert plan["model"] == "breast-cancer:1" and plan["endpoint_exists"] is True
    # The demo endpoint was deployed without these fields: the diff names them.
    changed = {change["field"] for change in plan["diff"]}
    assert {"traffic.peak_rps", "slo.p95_latency_ms", "budget.monthly_usd"} <= changed
    assert plan["profiles"][0]["hardware"] == "cpu"


def test_the_plan_table_explains_each_line(served: RunningServer, profiled: dict[str, Any]) -> None:
    result = _cli(served, text=intent(peak=20))
    assert result.exit_code == 0, result.output
    for label in (
        "environment",
        "hardware",
        "replicas",
        "p95",
        "headroom",
        "monthly cost",
        "cheaper, rejected",
        "faster, rejected",
        "policy",
        "diff",
    ):
        assert label in result.output, result.output


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (intent(peak=20, budget=0.01), "budget"),  # below the cheapest option
        (intent(peak=20, slo=0.001), "p95"),  # faster than anything measured
    ],
)
def test_an_impossible_intent_is_infeasible_with_the_reason_and_the_closest_plan(
    served: RunningServer, admin: Client, profiled: dict[str, Any], text: str, words: str
) -> None:
    plan = admin.plan(text)
    assert plan["feasible"] is False
    assert words in plan["reason"].lower(), plan["reason"]
    assert plan["closest"] is not None and plan["closest"]["hardware"]
    assert plan["hardware"] is None and plan["monthly_usd"] is None
    result = _cli(served, text=text)
    assert result.exit_code == 1, result.output
    assert "infeasible" in result.output and "closest" in result.output


def test_a_policy_denial_is_reported_not_raised(served: RunningServer, admin: Client) -> None:
    admin.put_policy(
        "plan-needs-outcome",
        "name: plan-needs-outcome\nmode: enforce\nstages: [plan]\nrules:\n"
        "  - name: say-why\n    require:\n      intent.outcome: {exists: true}\n"
        "    message: Say what the endpoint is for (outcome).\n",
    )
    try:
        plan = admin.plan(intent(peak=20))
        assert plan["policy"]["allowed"] is False
        (denial,) = plan["policy"]["denials"]
        assert (denial["policy"], denial["rule"]) == ("plan-needs-outcome", "say-why")
        assert _cli(served, text=intent(peak=20)).exit_code == 1
        assert admin.plan("outcome: triage\n" + intent(peak=20))["policy"]["allowed"] is True
    finally:
        admin.delete_policy("plan-needs-outcome")


@pytest.mark.parametrize(
    ("old", "new", "status", "field", "line"),
    [
        ("hardware: cpu", "hardware: quantum-9000", 400, "resources.hardware", 12),
        ("environment: sandbox", "environment: mars", 400, "environment", 10),
        ("model: breast-cancer:1", "model: breast-cancer:99", 404, "model", 3),
        ("task: tabular", "task: chat", 422, "task", 2),
    ],
)
def test_bad_input_is_a_4xx_naming_field_and_line_with_nothing_stored(
    admin: Client, old: str, new: str, status: int, field: str, line: int
) -> None:
    endpoints = admin.list_endpoints()
    profiles = admin.profiles("breast-cancer")
    with pytest.raises(ModelportClientError) as caught:
        admin.plan(intent().replace(old, new).replace("breast-cancer\n", "planned-only\n", 1))
    assert caught.value.status == status
    assert caught.value.details["field"] == field
    assert caught.value.details["line"] == line
    assert f"line {line}" in caught.value.message
    assert admin.list_endpoints() == endpoints
    assert admin.profiles("breast-cancer") == profiles


def test_an_invalid_intent_is_refused_naming_the_field(admin: Client) -> None:
    with pytest.raises(ModelportClientError) as caught:
        admin.plan(intent().replace("peak_rps: 50.0", "peak_rps: -3"))
    assert caught.value.status == 422
    assert "traffic.peak_rps (line 5)" in caught.value.message
    response = admin._http.post("/api/v1/plan", json={"intent": intent(), "dry_run": True})
    assert response.status_code == 422  # a plan takes the intent and its filename only


def _cli(served: RunningServer, *args: str, text: str) -> Any:
    path = Path(served.home.parent / "modelport.yaml")
    path.write_text(text)
    return runner.invoke(
        app, ["plan", "-f", str(path), *args, "--url", served.url, "--token", served.admin_token]
    )
