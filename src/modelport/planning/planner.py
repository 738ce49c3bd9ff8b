"""The planner: from an intent's traffic, SLO, budget and sensitivity to the cheapest
environment x hardware x devices x replicas that meets them.

Every candidate is judged (``candidates``); ``plan`` picks the cheapest feasible one (ties: the
lower p95), lists the cheaper options it rejected and the faster ones it did not need, and for
an impossible intent says why and which option comes closest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from modelport.core.errors import InvalidRequest
from modelport.planning.catalog import Catalog, HardwareType
from modelport.planning.llm import LlmModel, estimate_llm
from modelport.planning.profiles import Profile, ProfilePoint, capacity, predict_p95

__all__ = [
    "DEFAULT_INPUT_TOKENS",
    "DEFAULT_OUTPUT_TOKENS",
    "HEADROOM",
    "HOURS_PER_MONTH",
    "REPLICAS_LIMIT",
    "EnvironmentOption",
    "Option",
    "Plan",
    "PlanInput",
    "candidates",
    "plan",
]

HEADROOM = 0.3
"""Plan for peak x 1.3: room for bursts within a second and a replica being replaced."""
HOURS_PER_MONTH = 730
REPLICAS_LIMIT = 64
"""The most replicas an intent may ask for (``replicas.max``)."""
DEFAULT_INPUT_TOKENS = 512
DEFAULT_OUTPUT_TOKENS = 256
"""Tokens per request an LLM is sized for when the intent's traffic does not say."""

_LISTED = 5  # alternatives shown each way: enough to see the trade-off, short enough to read
_TENSOR_PARALLEL = (1, 2, 4, 8)

# The shipped data-residency policy's rule: what the planner picks, apply accepts.
_SENSITIVITY_KINDS = {
    "restricted": ("dedicated", "isolated"),
    "confidential": ("dedicated", "isolated"),
}


@dataclass(frozen=True, slots=True)
class EnvironmentOption:
    """An environment as the planner sees it."""

    name: str
    kind: str
    """shared | dedicated | isolated"""
    hardware: tuple[str, ...]
    sensitivities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlanInput:
    """What the planner needs from an intent (and from the store: environments, profiles)."""

    task: str
    sensitivity: str
    peak_rps: float | None
    input_tokens: int | None
    output_tokens: int | None
    p95_ms: float | None
    monthly_budget_usd: float | None
    hardware: str
    """"auto" or a catalog name (fixed)."""
    replicas_min: int
    replicas_max: int
    environment: str
    """An environment's name, or "auto"."""
    environments: tuple[EnvironmentOption, ...]
    llm: LlmModel | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    """Hardware name -> measured profile (preferred over estimates)."""


@dataclass(frozen=True, slots=True)
class Option:
    """One (environment, hardware, devices, replicas) candidate, feasible or not."""

    environment: str
    hardware: str
    devices: int
    replicas: int
    replicas_max: int
    p95_ms: float | None
    headroom: float | None
    """Share of the replicas' capacity left unused at peak."""
    monthly_usd: float
    basis: str
    """"measured" | "estimated" | "none"."""
    reason: str | None
    """Why infeasible; None when feasible (in a plan's rejected lists: why not chosen)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer."""

    feasible: bool
    chosen: Option | None
    closest: Option | None
    """When infeasible: the option that comes closest."""
    environment_reason: str
    """Why this environment: it accepts the data and holds the cheapest plan, or why not."""
    reason: str | None
    """Why no plan is feasible; for a feasible plan without a measured or estimated basis,
    the caveat (run ``modelport bench``); otherwise None."""
    rejected_cheaper: list[Option]
    """Up to five options cheaper than the chosen one, each with ``reason`` saying why not."""
    rejected_faster: list[Option]
    """Up to five with a lower p95 than the chosen one, cheapest first; ``reason`` says what
    they would cost more (or why they are infeasible)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``modelport plan --format json``."""
        return {
            "feasible": self.feasible,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "closest": self.closest.to_dict() if self.closest else None,
            "environment_reason": self.environment_reason,
            "reason": self.reason,
            "rejected_cheaper": [o.to_dict() for o in self.rejected_cheaper],
            "rejected_faster": [o.to_dict() for o in self.rejected_faster],
        }


def candidates(inp: PlanInput, catalog: Catalog) -> list[Option]:
    """Every option for ``inp``, each with its feasibility judged (``reason`` None = feasible).

    One option per environment x hardware x device count, with the replicas peak traffic
    needs; the checks, in order: the environment accepts the sensitivity, offers the hardware,
    the model fits in memory, the SLO is reachable at all, the replicas needed stay within
    ``replicas.max``, the monthly cost within the budget. ``reason`` names the first that fails.
    """
    return [option for option, _ in _judged(inp, catalog)]


def plan(inp: PlanInput, catalog: Catalog) -> Plan:
    """The cheapest feasible option (ties: lower p95), or the reason none is and the closest."""
    judged = _judged(inp, catalog)
    feasible = [option for option, _ in judged if option.reason is None]
    if not feasible:
        return _impossible(inp, judged)
    chosen = min(feasible, key=_order)
    cheaper = [
        option
        for option, stage in judged
        # One refused for the data's sensitivity or the hardware offer is no alternative.
        if stage > _OFFERED
        and option.reason is not None
        and option.monthly_usd < chosen.monthly_usd
    ]
    faster = [
        option
        for option, stage in judged
        # Feasible ones cost more (or the same); those over the budget or the replica limit
        # are faster alternatives the intent's own limits rule out.
        if stage >= _REPLICAS
        and option is not chosen
        and option.monthly_usd >= chosen.monthly_usd
        and option.p95_ms is not None
        and chosen.p95_ms is not None
        and option.p95_ms < chosen.p95_ms
    ]
    rejected_faster = [
        replace(option, reason=_costlier(option, chosen))
        for option in _one_per_kind(sorted(faster, key=_order))
    ]
    return Plan(
        feasible=True,
        chosen=chosen,
        closest=None,
        environment_reason=_environment_reason(inp, chosen.environment, judged),
        reason=_caveat(chosen),
        rejected_cheaper=_one_per_kind(sorted(cheaper, key=_order))[:_LISTED],
        rejected_faster=rejected_faster[:_LISTED],
    )


# The checks, in the order they are judged; an option failing a later one got further.
_SENSITIVITY, _OFFERED, _MEMORY, _SLO, _REPLICAS, _BUDGET, _FEASIBLE = range(7)


@dataclass(frozen=True, slots=True)
class _Performance:
    """What one replica of a (hardware, devices) does, from a profile or an estimate."""

    basis: str
    curve: Profile | None  # None: basis "none", or the model does not fit
    problem: str | None = None  # why the model cannot run here at all


def _judged(inp: PlanInput, catalog: Catalog) -> list[tuple[Option, int]]:
    """(option, how far it got through the checks) for every candidate."""
    environments = _environments(inp)
    types = list(catalog) if inp.hardware == "auto" else [catalog.get(inp.hardware)]
    any_profile = any(hw.name in inp.profiles for hw in types)
    judged: list[tuple[Option, int]] = []
    performance: dict[tuple[str, int], _Performance] = {}
    for env in environments:
        refused = _sensitivity_problem(inp.sensitivity, env)
        for hw in types:
            for devices in _device_counts(inp, hw):
                key = (hw.name, devices)
                if key not in performance:
                    performance[key] = _performance(inp, hw, devices, any_profile)
                judged.append(_judge(inp, env, hw, devices, refused, performance[key]))
    return judged


def _environments(inp: PlanInput) -> tuple[EnvironmentOption, ...]:
    if inp.environment == "auto":
        return inp.environments
    named = tuple(env for env in inp.environments if env.name == inp.environment)
    if not named:
        known = ", ".join(env.name for env in inp.environments) or "none"
        raise InvalidRequest(
            f"environment {inp.environment!r} does not exist (environments: {known}, or auto)",
            param="environment",
        )
    return named


def _sensitivity_problem(sensitivity: str, env: EnvironmentOption) -> str | None:
    if sensitivity not in env.sensitivities:
        accepted = ", ".join(env.sensitivities) or "none"
        return f"environment {env.name} does not accept {sensitivity} data (it accepts {accepted})"
    kinds = _SENSITIVITY_KINDS.get(sensitivity)
    if kinds is not None and env.kind not in kinds:
        return (
            f"{sensitivity} data runs only in {' or '.join(kinds)} environments; "
            f"{env.name} is {env.kind}"
        )
    return None


def _device_counts(inp: PlanInput, hw: HardwareType) -> tuple[int, ...]:
    if inp.llm is None or hw.kind == "cpu":
        return (1,)  # only an LLM splits across devices (tensor parallelism)
    return tuple(n for n in _TENSOR_PARALLEL if n <= hw.max_count) or (1,)


def _performance(inp: PlanInput, hw: HardwareType, devices: int, any_profile: bool) -> _Performance:
    profile = inp.profiles.get(hw.name)
    if profile is not None and devices == 1:
        return _Performance("measured", profile)
    if inp.llm is not None:
        return _llm_performance(inp, inp.llm, hw, devices)
    if any_profile:
        return _Performance(
            "none", None, f"no measured profile on {hw.name}: run `modelport bench` there"
        )
    return _Performance("none", None)


def _llm_performance(inp: PlanInput, llm: LlmModel, hw: HardwareType, devices: int) -> _Performance:
    """The estimate as a profile: closed-loop points at concurrency 1, 2, 4, ... up to what
    memory holds, so estimated and measured sizing share one interpolation."""
    tokens = {
        "input_tokens": inp.input_tokens or DEFAULT_INPUT_TOKENS,
        "output_tokens": inp.output_tokens or DEFAULT_OUTPUT_TOKENS,
    }
    first = estimate_llm(llm, hw, devices, concurrency=1, **tokens)
    if not first.fits:
        need = first.weights_gb + first.kv_gb_per_seq
        return _Performance(
            "estimated",
            None,
            f"the model does not fit: {first.weights_gb:.1f} GB of weights plus "
            f"{first.kv_gb_per_seq:.2f} GB of KV cache per sequence (~{need:.1f} GB) on "
            f"{devices} x {hw.memory_gb:g} GB",
        )
    if hw.kind == "cpu":
        # On CPUs the model runs in llama.cpp, which generates for one request at a time per
        # replica (one context, one lock): no continuous batching to count on.
        levels = [1]
    else:
        levels = sorted({*_powers_of_two(min(first.max_sequences, 1024)), first.max_sequences})
    points = []
    for level in levels:
        est = first if level == 1 else estimate_llm(llm, hw, devices, concurrency=level, **tokens)
        points.append(
            ProfilePoint(level, est.rps_per_replica, est.p95_ms, est.p95_ms, est.p95_ms, 0)
        )
    return _Performance("estimated", Profile(hw.name, tuple(points), {}))


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(max(1, limit).bit_length()) if 1 << i <= limit]


def _judge(
    inp: PlanInput,
    env: EnvironmentOption,
    hw: HardwareType,
    devices: int,
    refused: str | None,
    perf: _Performance,
) -> tuple[Option, int]:
    def option(
        replicas: int, p95: float | None, headroom: float | None, reason: str | None
    ) -> Option:
        return Option(
            environment=env.name,
            hardware=hw.name,
            devices=devices,
            replicas=replicas,
            replicas_max=max(replicas, inp.replicas_max),
            p95_ms=p95,
            headroom=headroom,
            monthly_usd=round(hw.hourly_usd * devices * replicas * HOURS_PER_MONTH, 2),
            basis=perf.basis,
            reason=reason,
        )

    low = max(1, inp.replicas_min)  # priced at least one replica: zero is not a plan's cost
    if refused is not None:
        return option(low, None, None, refused), _SENSITIVITY
    if hw.name not in env.hardware:
        offered = ", ".join(env.hardware) or "nothing"
        return option(
            low,
            None,
            None,
            f"environment {env.name} does not offer {hw.name} (it offers {offered})",
        ), _OFFERED
    if perf.problem is not None:
        return option(low, None, None, perf.problem), _MEMORY
    if perf.curve is None:  # basis "none": nothing to size with
        replicas = low
        p95 = None
        headroom = None
    else:
        cap = capacity(perf.curve, inp.p95_ms)
        if cap <= 0:
            lightest = predict_p95(perf.curve, 0.0)
            if lightest is None:
                why = f"the profile on {hw.name} has no point without errors: bench again"
            else:
                why = (
                    f"p95 is {lightest:.0f} ms even at the lightest load, above the SLO of "
                    f"{inp.p95_ms:g} ms"
                )
            return option(low, lightest, None, why), _SLO
        replicas = low
        if inp.peak_rps is not None:
            # The epsilon keeps 2.0000000001 replicas (float noise) from becoming 3.
            replicas = max(low, math.ceil(inp.peak_rps * (1 + HEADROOM) / cap - 1e-9))
        load = (inp.peak_rps or 0.0) / replicas
        p95 = predict_p95(perf.curve, load)
        headroom = 1 - load / cap
        limit = min(inp.replicas_max, REPLICAS_LIMIT)
        if replicas > limit:
            why = (
                f"needs {replicas} replicas for a peak of {inp.peak_rps:g} rps "
                f"(+{HEADROOM:.0%} headroom) at {cap:.3g} rps each; replicas.max is {limit}"
            )
            return option(replicas, p95, headroom, why), _REPLICAS
    opt = option(replicas, p95, headroom, None)
    budget = inp.monthly_budget_usd
    if budget is not None and opt.monthly_usd > budget + 1e-9:
        return replace(
            opt, reason=f"costs ${opt.monthly_usd:,.2f} a month, over the budget of ${budget:,.2f}"
        ), _BUDGET
    return opt, _FEASIBLE


def _order(option: Option) -> tuple[float, float, str, str, int, int]:
    """Cheapest first; ties: lower p95 (unknown last), then a stable order by name."""
    p95 = option.p95_ms if option.p95_ms is not None else math.inf
    return (
        option.monthly_usd,
        p95,
        option.environment,
        option.hardware,
        option.devices,
        option.replicas,
    )


def _one_per_kind(options: list[Option]) -> list[Option]:
    """The first (best-ordered) option of each hardware type and device count."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for option in options:
        if (option.hardware, option.devices) not in seen:
            seen.add((option.hardware, option.devices))
            kept.append(option)
    return kept


def _costlier(option: Option, chosen: Option) -> str:
    extra = option.monthly_usd - chosen.monthly_usd
    if option.reason is not None:
        return option.reason
    return (
        f"p95 {option.p95_ms:.0f} ms instead of {chosen.p95_ms:.0f} ms, for ${extra:,.2f} a "
        "month more; the chosen plan already meets the intent"
    )


def _caveat(chosen: Option) -> str | None:
    if chosen.basis == "none":
        return (
            "no measured profile and no LLM shape to estimate from: the replicas are "
            "replicas.min and the p95 is unknown; run `modelport bench ENDPOINT` and plan again"
        )
    return None


def _environment_reason(
    inp: PlanInput, name: str, judged: list[tuple[Option, int]], *, feasible: bool = True
) -> str:
    env = next(e for e in inp.environments if e.name == name)
    accepts = f"{env.name} ({env.kind}) accepts {inp.sensitivity} data"
    if inp.environment != "auto":
        return f"{accepts}, as the intent names it"
    refused = sorted({o.environment for o, stage in judged if stage == _SENSITIVITY})
    others = f"; {', '.join(refused)} do{'es' if len(refused) == 1 else ''} not" if refused else ""
    holds = (
        "holds the cheapest plan that meets the intent"
        if feasible
        else "holds the option that comes closest"
    )
    return f"auto: {accepts} and {holds}{others}"


def _impossible(inp: PlanInput, judged: list[tuple[Option, int]]) -> Plan:
    if not judged:
        return Plan(
            False,
            None,
            None,
            "no environment exists",
            "no environment exists: an admin creates one with `modelport environments create`",
            [],
            [],
        )
    furthest = max(stage for _, stage in judged)
    stuck = [option for option, stage in judged if stage == furthest]
    if furthest == _SLO:  # no option reaches the SLO: the fastest comes closest
        closest = min(stuck, key=lambda o: (o.p95_ms or math.inf, o.monthly_usd))
    elif furthest == _REPLICAS:  # the fewest replicas over the limit, then the cheapest
        closest = min(stuck, key=lambda o: (o.replicas, o.monthly_usd))
    elif furthest == _BUDGET:  # everything else met: the cheapest
        closest = min(stuck, key=_order)
    else:  # refused by sensitivity, hardware offer or memory: nothing to come close with
        closest = None
    reasons = sorted({option.reason or "" for option in stuck})
    summary = {
        _SENSITIVITY: "no environment accepts this data",
        _OFFERED: "no environment that accepts this data offers the hardware",
        _MEMORY: "the model fits on no hardware offered",
        _SLO: "no hardware offered meets the p95 SLO",
        _REPLICAS: "meeting the SLO at peak needs more replicas than replicas.max allows",
        _BUDGET: "every option that meets the SLO costs more than the budget",
    }[furthest]
    detail = closest.reason if closest is not None else reasons[0]
    env_name = closest.environment if closest is not None else stuck[0].environment
    return Plan(
        feasible=False,
        chosen=None,
        closest=closest,
        environment_reason=(
            _environment_reason(inp, env_name, judged, feasible=False)
            if furthest > _SENSITIVITY
            else "; ".join(sorted({o.reason or "" for o, s in judged if s == _SENSITIVITY}))
        ),
        reason=f"{summary}: {detail}",
        rejected_cheaper=[],
        rejected_faster=[],
    )
