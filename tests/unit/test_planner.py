"""The planner: its choice equals a brute-force search on a grid of intents, and each rule
(sensitivity, hardware offer, memory, SLO, replicas, budget, ties) holds on its own."""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import replace
from typing import Any

import pytest

from modelport.core.errors import InvalidRequest
from modelport.planning.catalog import Catalog, HardwareType, load_catalog
from modelport.planning.llm import LlmModel, estimate_llm
from modelport.planning.planner import (
    EnvironmentOption,
    Plan,
    PlanInput,
    candidates,
    plan,
)
from modelport.planning.profiles import Profile, ProfilePoint, predict_p95

CATALOG = load_catalog()
ALL = ("public", "internal", "confidential", "restricted")
SANDBOX = EnvironmentOption(
    "sandbox", "shared", ("cpu", "cpu-8", "t4", "l4"), ("public", "internal")
)
PRODUCTION = EnvironmentOption("production", "dedicated", tuple(CATALOG.names()), ALL)
VAULT = EnvironmentOption("vault", "isolated", ("cpu", "a100-80gb", "h100"), ALL)
ENVIRONMENTS = (SANDBOX, PRODUCTION, VAULT)

LLAMA3_8B = LlmModel(8.03, 2, layers=32, kv_heads=8, head_dim=128, context=8192)
SMOLLM2 = LlmModel(0.135, 0.72, layers=30, kv_heads=3, head_dim=64, context=8192)


def _profile(hardware: str, scale: float) -> Profile:
    """A tabular model's bench: ``scale`` x the cpu's throughput, latency down by as much."""
    points = [(1, 150.0, 8.0), (2, 260.0, 10.0), (4, 380.0, 14.0), (8, 420.0, 26.0)]
    return Profile(
        hardware,
        tuple(
            ProfilePoint(c, rps * scale, p95 / scale * 0.7, p95 / scale, p95 / scale * 1.3, 0)
            for c, rps, p95 in points
        ),
        {"cpu": "test"},
    )


PROFILES = {"cpu": _profile("cpu", 1.0), "cpu-8": _profile("cpu-8", 3.5), "t4": _profile("t4", 6)}


def _input(**overrides: Any) -> PlanInput:
    base: dict[str, Any] = {
        "task": "tabular",
        "sensitivity": "internal",
        "peak_rps": 100.0,
        "input_tokens": None,
        "output_tokens": None,
        "p95_ms": 50.0,
        "monthly_budget_usd": None,
        "hardware": "auto",
        "replicas_min": 1,
        "replicas_max": 64,
        "environment": "auto",
        "environments": ENVIRONMENTS,
        "llm": None,
        "profiles": PROFILES,
    }
    base.update(overrides)
    return PlanInput(**base)


# --- the brute-force search, written without the planner's code ------------------------------


def _accepts(env: EnvironmentOption, sensitivity: str) -> bool:
    if sensitivity not in env.sensitivities:
        return False
    if sensitivity in ("confidential", "restricted"):
        return env.kind in ("dedicated", "isolated")
    return True


def _llm_curve(inp: PlanInput, hw: HardwareType, devices: int) -> Profile | None:
    """The estimated performance: closed-loop points at 1, 2, 4, ... sequences up to what
    memory holds (the option set both searches share)."""
    assert inp.llm is not None
    tokens = {"input_tokens": inp.input_tokens or 512, "output_tokens": inp.output_tokens or 256}
    first = estimate_llm(inp.llm, hw, devices, concurrency=1, **tokens)
    if not first.fits:
        return None
    top = first.max_sequences
    levels = sorted({2**i for i in range(11) if 2**i <= min(top, 1024)} | {top})
    if hw.kind == "cpu":
        levels = [1]  # llama.cpp on a CPU generates for one request at a time
    points = []
    for level in levels:
        est = estimate_llm(inp.llm, hw, devices, concurrency=level, **tokens)
        points.append(ProfilePoint(level, est.rps_per_replica, 0, est.p95_ms, 0, 0))
    return Profile(hw.name, tuple(points), {})


def brute_force(inp: PlanInput, catalog: Catalog) -> list[tuple[float, float, tuple[Any, ...]]]:
    """Every feasible (cost, p95, option) over environment x hardware x devices x replicas."""
    envs = [e for e in inp.environments if inp.environment in ("auto", e.name)]
    types = list(catalog) if inp.hardware == "auto" else [catalog.get(inp.hardware)]
    profiled = any(hw.name in inp.profiles for hw in types)
    found = []
    for env, hw, devices in itertools.product(envs, types, (1, 2, 4, 8)):
        if not _accepts(env, inp.sensitivity) or hw.name not in env.hardware:
            continue
        if devices > hw.max_count or (devices > 1 and (inp.llm is None or hw.kind == "cpu")):
            continue
        curve: Profile | None
        if hw.name in inp.profiles and devices == 1:
            curve = inp.profiles[hw.name]
        elif inp.llm is not None:
            curve = _llm_curve(inp, hw, devices)
            if curve is None:
                continue  # does not fit
        elif profiled:
            continue  # measured elsewhere, not here: nothing to compare with
        else:
            curve = None  # nothing known: priced at the fewest replicas, p95 unknown
        for replicas in range(max(1, inp.replicas_min), min(inp.replicas_max, 64) + 1):
            p95: float | None = None
            if curve is not None:
                peak = inp.peak_rps or 0.0
                with_headroom = predict_p95(curve, peak * 1.3 / replicas)
                p95 = predict_p95(curve, peak / replicas)
                if with_headroom is None or p95 is None:
                    continue  # more than a replica was measured to do
                if inp.p95_ms is not None and with_headroom > inp.p95_ms:
                    continue
            cost = round(hw.hourly_usd * devices * replicas * 730, 2)
            if inp.monthly_budget_usd is None or cost <= inp.monthly_budget_usd:
                found.append(
                    (cost, math.inf if p95 is None else p95, (env.name, hw.name, devices, replicas))
                )
            break  # more replicas of a feasible option only cost more
    return found


GRID = list(
    itertools.product(
        ("tabular", "llm-8b", "llm-135m", "unmeasured"),
        (None, 0.5, 5.0, 40.0, 300.0),  # peak rps
        (None, 30.0, 2_000.0, 20_000.0),  # p95 ms
        (None, 80.0, 2_000.0, 60_000.0),  # monthly budget
        ("public", "confidential", "restricted"),
        ("auto", "cpu", "t4", "h100"),  # hardware
        ("auto", "sandbox", "production"),  # environment
        (1, 3),  # replicas min
        (4, 64),  # replicas max
    )
)


@pytest.mark.parametrize("seed", range(4))
def test_planner_choice_equals_the_brute_force_cheapest(seed: int) -> None:
    cases = random.Random(seed).sample(GRID, 150)
    feasible_seen = infeasible_seen = 0
    for model, peak, p95, budget, sensitivity, hardware, env, low, high in cases:
        inp = _input(
            peak_rps=peak,
            p95_ms=p95,
            monthly_budget_usd=budget,
            sensitivity=sensitivity,
            hardware=hardware,
            environment=env,
            replicas_min=low,
            replicas_max=high,
            llm={"llm-8b": LLAMA3_8B, "llm-135m": SMOLLM2}.get(model),
            profiles=PROFILES if model == "tabular" else {},
            task="chat" if model.startswith("llm") else "tabular",
            input_tokens=400 if model.startswith("llm") else None,
            output_tokens=150 if model.startswith("llm") else None,
        )
        got = plan(inp, CATALOG)
        expected = brute_force(inp, CATALOG)
        context = f"{inp}\n{json.dumps(got.to_dict(), indent=1)}"
        assert got.feasible == bool(expected), context
        if not expected:
            infeasible_seen += 1
            assert got.chosen is None and got.reason, context
            continue
        feasible_seen += 1
        best_cost, best_p95 = min((cost, p) for cost, p, _ in expected)
        optimal = {
            o for cost, p, o in expected if cost == best_cost and p == pytest.approx(best_p95)
        }
        assert got.chosen is not None, context
        chosen = got.chosen
        assert chosen.monthly_usd == best_cost, context
        assert (chosen.p95_ms or math.inf) == pytest.approx(best_p95), context
        key = (chosen.environment, chosen.hardware, chosen.devices, chosen.replicas)
        assert key in optimal, context
    assert feasible_seen >= 20 and infeasible_seen >= 20  # the grid exercises both


# --- the rules one by one ------------------------------------------------------------------


def test_replicas_cover_peak_with_headroom() -> None:
    # cpu: 260 rps at 10 ms, 380 at 14 ms; a 12 ms SLO crosses half way: 320 rps a replica.
    got = plan(_input(peak_rps=1000.0, p95_ms=12.0, hardware="cpu"), CATALOG)
    assert got.chosen is not None
    assert got.chosen.replicas == math.ceil(1000 * 1.3 / 320)  # 5
    assert got.chosen.basis == "measured"
    assert got.chosen.headroom == pytest.approx(1 - 200 / 320)
    assert got.chosen.p95_ms == pytest.approx(predict_p95(PROFILES["cpu"], 200.0))
    assert got.chosen.monthly_usd == pytest.approx(0.1008 * 5 * 730, abs=0.01)


def test_replicas_min_is_kept_and_no_traffic_means_replicas_min() -> None:
    got = plan(_input(peak_rps=1.0, replicas_min=3), CATALOG)
    assert got.chosen is not None and got.chosen.replicas == 3
    got = plan(_input(peak_rps=None, replicas_min=2, p95_ms=None), CATALOG)
    assert got.chosen is not None and got.chosen.replicas == 2
    assert got.chosen.p95_ms == pytest.approx(8.0)  # the lightest measured load


def test_restricted_data_runs_only_in_a_dedicated_or_isolated_environment() -> None:
    """As the shipped data-residency policy says: what the planner picks, apply accepts."""
    vault = plan(_input(sensitivity="restricted", environment="vault"), CATALOG)
    assert vault.chosen is not None and vault.chosen.environment == "vault"
    assert "vault (isolated) accepts restricted data" in vault.environment_reason
    # A shared environment refuses it even when its sensitivities were set to include it.
    lax = EnvironmentOption("lax", "shared", ("cpu",), ALL)
    named = plan(_input(sensitivity="restricted", environment="lax", environments=(lax,)), CATALOG)
    assert not named.feasible and named.closest is None
    assert "restricted data runs only in dedicated or isolated" in (named.reason or "")


def test_confidential_data_is_refused_by_a_shared_environment() -> None:
    got = plan(_input(sensitivity="confidential", environment="sandbox"), CATALOG)
    assert not got.feasible
    assert "sandbox does not accept confidential data" in (got.reason or "")


def test_budget_below_the_cheapest_gets_the_reason_and_the_closest_plan() -> None:
    meets_slo = plan(_input(peak_rps=2000.0, p95_ms=12.0), CATALOG)
    assert meets_slo.chosen is not None
    got = plan(_input(peak_rps=2000.0, p95_ms=12.0, monthly_budget_usd=100.0), CATALOG)
    assert not got.feasible and got.chosen is None
    assert got.reason is not None and "budget" in got.reason
    # The closest: what the intent would cost without the budget.
    assert got.closest is not None
    assert got.closest.monthly_usd == meets_slo.chosen.monthly_usd
    assert got.closest.hardware == meets_slo.chosen.hardware
    assert "over the budget of $100.00" in (got.closest.reason or "")


def test_unreachable_slo_gets_the_fastest_option_as_closest() -> None:
    got = plan(_input(p95_ms=1.0), CATALOG)
    assert not got.feasible
    assert got.reason is not None and "p95 SLO" in got.reason
    assert got.closest is not None and got.closest.hardware == "t4"  # the fastest measured
    assert got.closest.p95_ms == pytest.approx(8.0 / 6)


def test_more_replicas_than_allowed_is_infeasible() -> None:
    got = plan(_input(peak_rps=5000.0, p95_ms=12.0, hardware="cpu", replicas_max=4), CATALOG)
    assert not got.feasible
    assert got.closest is not None and got.closest.replicas == math.ceil(5000 * 1.3 / 320)
    assert "replicas.max is 4" in (got.closest.reason or "")


def test_measured_profiles_are_preferred_and_unmeasured_hardware_is_not_guessed() -> None:
    options = candidates(_input(profiles={"cpu": PROFILES["cpu"]}), CATALOG)
    measured = [o for o in options if o.basis == "measured"]
    assert measured and all(o.hardware == "cpu" for o in measured)
    gpu = next(o for o in options if o.hardware == "h100" and o.environment == "production")
    assert gpu.reason is not None and "modelport bench" in gpu.reason


def test_a_model_without_profile_or_llm_shape_is_planned_at_replicas_min() -> None:
    got = plan(_input(profiles={}, replicas_min=2, replicas_max=5), CATALOG)
    assert got.feasible and got.chosen is not None
    assert (got.chosen.basis, got.chosen.replicas, got.chosen.p95_ms) == ("none", 2, None)
    assert got.chosen.hardware == "cpu"  # the cheapest offered
    assert got.reason is not None and "modelport bench" in got.reason


def test_an_llm_too_big_for_one_gpu_gets_tensor_parallelism() -> None:
    llama70 = LlmModel(70.6, 2, layers=80, kv_heads=8, head_dim=128, context=8192)
    got = plan(
        _input(task="chat", llm=llama70, profiles={}, peak_rps=0.1, p95_ms=30_000.0,
               input_tokens=500, output_tokens=200, hardware="h100", environment="production"),
        CATALOG,
    )  # fmt: skip
    assert got.chosen is not None and got.chosen.devices == 2 and got.chosen.basis == "estimated"
    one = next(
        o for o in candidates(replace(_input(), llm=llama70, profiles={}, hardware="h100",
                                      environment="production"), CATALOG)
        if o.devices == 1
    )  # fmt: skip
    assert one.reason is not None and "does not fit" in one.reason


def test_an_llm_on_a_cpu_is_planned_one_request_at_a_time() -> None:
    """The CPU runtime (llama.cpp) does not batch: a replica's capacity is one request's rate."""
    tokens = {"input_tokens": 100, "output_tokens": 50}
    inp = _input(
        task="chat", llm=SMOLLM2, profiles={}, peak_rps=3.0, p95_ms=None, hardware="cpu", **tokens
    )
    alone = estimate_llm(SMOLLM2, CATALOG.get("cpu"), 1, concurrency=1, **tokens)
    got = plan(inp, CATALOG)
    assert got.chosen is not None
    assert got.chosen.replicas == math.ceil(3.0 * 1.3 / alone.rps_per_replica)


def test_ties_on_cost_go_to_the_lower_p95() -> None:
    slow = HardwareType("slow", "gpu", 24, 300, 100, 1.0, sources={})
    fast = HardwareType("fast", "gpu", 24, 900, 100, 1.0, sources={})
    catalog = Catalog({"slow": slow, "fast": fast})
    env = EnvironmentOption("production", "dedicated", ("slow", "fast"), ALL)
    got = plan(
        _input(task="chat", llm=SMOLLM2, profiles={}, environments=(env,), peak_rps=0.1,
               p95_ms=None, input_tokens=100, output_tokens=100),
        catalog,
    )  # fmt: skip
    assert got.chosen is not None and got.chosen.hardware == "fast" and got.chosen.devices == 1


def test_rejected_alternatives_are_cheaper_failures_and_faster_costlier_options() -> None:
    got = plan(_input(peak_rps=2000.0, p95_ms=12.0, environment="production"), CATALOG)
    assert got.chosen is not None
    assert got.rejected_cheaper and got.rejected_faster
    for option in got.rejected_cheaper:
        assert option.monthly_usd < got.chosen.monthly_usd and option.reason
    for option in got.rejected_faster:
        assert option.p95_ms is not None and got.chosen.p95_ms is not None
        assert option.p95_ms < got.chosen.p95_ms
        assert option.monthly_usd >= got.chosen.monthly_usd and option.reason
    # Options refused for the environment (sensitivity, hardware offer) are not alternatives.
    sandbox = plan(_input(environment="sandbox"), CATALOG)
    assert all("does not offer" not in (o.reason or "") for o in sandbox.rejected_cheaper)


def test_faster_options_the_budget_rules_out_are_listed_with_the_reason() -> None:
    free = plan(_input(peak_rps=2000.0, p95_ms=12.0, environment="production"), CATALOG)
    assert free.chosen is not None
    budget = free.chosen.monthly_usd + 1  # room for the cheapest, not for a faster one
    got = plan(_input(peak_rps=2000.0, p95_ms=12.0, environment="production",
                      monthly_budget_usd=budget), CATALOG)  # fmt: skip
    assert got.chosen == free.chosen
    over = [o for o in got.rejected_faster if "over the budget" in (o.reason or "")]
    assert over and all(o.monthly_usd > budget for o in over)


def test_unknown_hardware_or_environment_is_a_400_naming_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        plan(_input(hardware="tpu"), CATALOG)
    assert caught.value.details["param"] == "resources.hardware"
    with pytest.raises(InvalidRequest) as caught:
        plan(_input(environment="mars"), CATALOG)
    assert caught.value.details["param"] == "environment"
    assert "sandbox" in caught.value.message


def test_no_environment_at_all_is_infeasible_not_a_crash() -> None:
    got = plan(_input(environments=()), CATALOG)
    assert not got.feasible and got.reason and "environment" in got.reason


def test_plan_to_dict_is_json() -> None:
    for got in (plan(_input(), CATALOG), plan(_input(p95_ms=1.0), CATALOG)):
        data = json.loads(json.dumps(got.to_dict()))
        assert set(data) == {
            "feasible",
            "chosen",
            "closest",
            "environment_reason",
            "reason",
            "rejected_cheaper",
            "rejected_faster",
        }
        assert isinstance(got, Plan)
    data = plan(_input(), CATALOG).to_dict()
    assert data["chosen"]["basis"] == "measured" and data["chosen"]["reason"] is None
