"""The proposals of ``modelport recommend``, pure: from what an endpoint did (``Observed``)
and its intent, what to change, each with its reason, effect and diff on the intent (see
``control/recommend.py`` for the kinds and how replicas are sized)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from modelport.control.observed import (
    Observed,
)
from modelport.core.enums import Task
from modelport.core.errors import InvalidRequest, ModelportError
from modelport.core.intent import Intent, IntentBatching
from modelport.planning.catalog import Catalog
from modelport.planning.llm import LlmModel
from modelport.planning.planner import (
    HEADROOM,
    HOURS_PER_MONTH,
    REPLICAS_LIMIT,
    EnvironmentOption,
    Option,
    PlanInput,
    plan,
)
from modelport.planning.profiles import Profile, ProfilePoint

__all__ = [
    "BATCHING_MIN_RPS",
    "SLO_MIN_REQUESTS",
    "PlanFn",
    "Proposal",
    "Recommendation",
    "propose",
]

BATCHING_MIN_RPS = 20.0
"""The peak from which server-side batching is worth its few milliseconds of waiting."""
SLO_MIN_REQUESTS = 50
"""Requests a p95 needs before it says anything about the SLO."""
NEVER_AT_RISK = 0.25
"""A p95 under this share of the target never comes near it."""
AT_RISK_SLOW_SHARE = 0.05
"""More slow requests than this share means the p95 target was missed over the window."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """One suggested change to the intent; never applied by Modelport itself."""

    kind: str
    reason: str
    effect: dict[str, float | None]
    """``monthly_usd``: the change in monthly cost (negative saves); ``p95_ms``: predicted."""
    diff: list[dict[str, Any]]
    """``[{field, before, after}]`` in the intent's dotted paths."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """An endpoint's proposals, what they were sized on, and what could not be judged."""

    proposals: list[Proposal] = field(default_factory=list)
    basis: str = "none"
    """"measured" (a bench profile), "estimated" (LLM), "observed" or "none"."""
    notes: list[str] = field(default_factory=list)


# --- the proposals (pure) -------------------------------------------------------------------


PlanFn = Callable[[PlanInput, Catalog], Any]


def propose(
    intent: Intent,
    seen: Observed,
    *,
    catalog: Catalog,
    hardware: str,
    environments: Sequence[EnvironmentOption] = (),
    profiles: Mapping[str, Profile] | None = None,
    llm: LlmModel | None = None,
    planner: PlanFn = plan,
) -> Recommendation:
    """The changes ``seen`` suggests to ``intent``, whose replicas run on ``hardware``.

    ``environments`` are the installation's (for hardware proposals), ``profiles`` the model
    version's bench profiles by hardware name, ``llm`` its shape for an LLM estimate."""
    notes: list[str] = []
    replicas = intent.resources.replicas
    try:
        hourly = catalog.get(hardware).hourly_usd
    except InvalidRequest as exc:
        return Recommendation(notes=[f"cannot price {hardware!r}: {exc.message}"])
    before = {"min": replicas.min, "max": replicas.max}
    if seen.requests == 0:
        if replicas.min == 0:
            return Recommendation(notes=["no request in the window; it already scales to zero"])
        after = {"min": 0, "max": max(replicas.max, 1)}
        saved = -hourly * replicas.min * HOURS_PER_MONTH
        reason = (
            f"no request in {_days(seen.days)}, yet {replicas.min} replica(s) always run: "
            "with min 0 the endpoint stops when idle and starts on its next request (that "
            "request waits for a replica to start)"
        )
        return Recommendation(
            proposals=[
                Proposal(
                    "scale_to_zero",
                    reason,
                    {"monthly_usd": round(saved, 2), "p95_ms": None},
                    [_change("resources.replicas", before, after)],
                )
            ],
            basis="observed",
        )
    sizing = dict(profiles or {})
    basis = "measured" if hardware in sizing else ("estimated" if llm is not None else "none")
    if basis == "none" and seen.upstream_ms_mean:
        sizing[hardware] = _observed_profile(hardware, seen)
        basis = "observed"
    proposals: list[Proposal] = []
    sized = _size(intent, seen, catalog, hardware, sizing, llm, planner)
    if isinstance(sized, str):
        notes.append(sized)
    else:
        proposals += _replica_proposals(intent, seen, sized, hourly)
    proposals += _hardware_proposals(
        intent, seen, catalog, hardware, sized, sizing, llm, environments, planner, notes
    )
    proposals += _batching(intent, seen)
    proposals += _slo(intent, seen)
    return Recommendation(proposals=proposals, basis=basis, notes=notes)


def _change(path: str, before: Any, after: Any) -> dict[str, Any]:
    return {"field": path, "before": before, "after": after}


def _observed_profile(hardware: str, seen: Observed) -> Profile:
    """One request at a time per replica at the observed mean model time: the throughput a
    replica surely reached, and the p95 seen at it."""
    service_ms = max(seen.upstream_ms_mean or 0.0, 0.1)
    p95 = seen.p95_ms if seen.p95_ms is not None else (seen.latency_ms_mean or service_ms)
    p50 = min(seen.latency_ms_mean or p95, p95)
    point = ProfilePoint(1, 1000.0 / service_ms, p50, p95, p95, 0)
    return Profile(hardware, (point,), {"basis": "observed"})


def _plan_input(
    intent: Intent,
    seen: Observed,
    *,
    hardware: str,
    environment: str,
    environments: Sequence[EnvironmentOption],
    profiles: Mapping[str, Profile],
    llm: LlmModel | None,
    budget: float | None,
) -> PlanInput:
    return PlanInput(
        task=str(intent.task.value),
        sensitivity=intent.data.sensitivity,
        peak_rps=seen.peak_rps,
        input_tokens=intent.traffic.avg_input_tokens,
        output_tokens=intent.traffic.avg_output_tokens,
        p95_ms=intent.slo.p95_latency_ms,
        monthly_budget_usd=budget,
        hardware=hardware,
        # Sized from one replica up: the intent's own minimum is what is being judged.
        replicas_min=0,
        replicas_max=REPLICAS_LIMIT,
        environment=environment,
        environments=tuple(environments),
        llm=llm,
        profiles=dict(profiles),
    )


def _size(
    intent: Intent,
    seen: Observed,
    catalog: Catalog,
    hardware: str,
    profiles: Mapping[str, Profile],
    llm: LlmModel | None,
    planner: PlanFn,
) -> Option | str:
    """The replicas the measured peak needs on the current hardware, or why that is unknown.

    Judged in an environment of its own that offers the hardware and accepts the data: this
    is about how many, not where."""
    here = EnvironmentOption(
        name=intent.environment,
        kind="dedicated",
        hardware=(hardware,),
        sensitivities=(intent.data.sensitivity,),
    )
    inp = _plan_input(
        intent,
        seen,
        hardware=hardware,
        environment=here.name,
        environments=(here,),
        profiles=profiles,
        llm=llm,
        budget=None,
    )
    result = planner(inp, catalog)
    if result.chosen is None:
        return f"cannot size on {hardware}: {result.reason}"
    chosen: Option = result.chosen
    if chosen.basis == "none":
        return (
            "no profile, estimate or observed model time to size replicas with: run "
            "`modelport bench ENDPOINT`"
        )
    return chosen


def _replica_proposals(
    intent: Intent, seen: Observed, sized: Option, hourly: float
) -> list[Proposal]:
    replicas = intent.resources.replicas
    needed = sized.replicas
    before = {"min": replicas.min, "max": replicas.max}
    peak = (
        f"the busiest minute averaged {seen.peak_rps:.3g} rps over {_days(seen.days)}; "
        f"with {HEADROOM:.0%} headroom that needs {needed} replica(s) "
        f"({_basis_words(sized.basis)})"
    )
    per_month = hourly * sized.devices * HOURS_PER_MONTH
    effect = {"p95_ms": _round(sized.p95_ms)}
    if replicas.min > needed:  # more than needed run all the time
        after = {"min": needed, "max": needed if replicas.min == replicas.max else replicas.max}
        return [
            Proposal(
                "fewer_replicas",
                f"{peak}; {replicas.min} always run",
                {"monthly_usd": round((needed - replicas.min) * per_month, 2), **effect},
                [_change("resources.replicas", before, after)],
            )
        ]
    if replicas.max < needed:  # the range cannot reach what the peak needs
        after = {"min": needed if replicas.min == replicas.max else replicas.min, "max": needed}
        # At most: with a range, the extra replicas run only while the load needs them.
        extra = (needed - replicas.max) * per_month
        return [
            Proposal(
                "more_replicas",
                f"{peak}; at most {replicas.max} can run",
                {"monthly_usd": round(extra, 2), **effect},
                [_change("resources.replicas", before, after)],
            )
        ]
    return []


def _days(days: float) -> str:
    return "1 day" if days == 1 else f"{days:g} days"


def _basis_words(basis: str) -> str:
    return {
        "measured": "sized from the bench profile",
        "estimated": "sized from the LLM estimate",
        "observed": "sized from the observed model time, one request at a time per replica",
    }.get(basis, basis)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _hardware_proposals(
    intent: Intent,
    seen: Observed,
    catalog: Catalog,
    hardware: str,
    sized: Option | str,
    profiles: Mapping[str, Profile],
    llm: LlmModel | None,
    environments: Sequence[EnvironmentOption],
    planner: PlanFn,
    notes: list[str],
) -> list[Proposal]:
    """Another hardware type when the planner, at the measured peak, prefers one."""
    if not environments:
        notes.append("no environment to judge other hardware in")
        return []
    inp = _plan_input(
        intent,
        seen,
        hardware="auto",
        environment=intent.environment,
        environments=environments,
        profiles=profiles,
        llm=llm,
        budget=intent.budget.monthly_usd,
    )
    try:
        result = planner(inp, catalog)
    except ModelportError as exc:  # e.g. the intent's environment was deleted since
        notes.append(f"other hardware not judged: {exc.message}")
        return []
    chosen: Option | None = result.chosen
    if chosen is None or chosen.hardware == hardware or chosen.basis == "none":
        return []
    replicas = intent.resources.replicas
    if isinstance(sized, Option):
        baseline, now_p95 = sized.monthly_usd, sized.p95_ms
    else:  # the current hardware cannot meet the SLO at all
        baseline = catalog.get(hardware).hourly_usd * max(replicas.min, 1) * HOURS_PER_MONTH
        now_p95 = seen.p95_ms
    cheaper = chosen.monthly_usd < baseline
    if not cheaper and isinstance(sized, Option):
        return []  # the current hardware meets the SLO for less: nothing to gain
    diff = [_change("resources.hardware", intent.resources.hardware, chosen.hardware)]
    after = {"min": chosen.replicas, "max": max(chosen.replicas, replicas.max)}
    if after != {"min": replicas.min, "max": replicas.max}:
        diff.append(
            _change("resources.replicas", {"min": replicas.min, "max": replicas.max}, after)
        )
    where = f"{chosen.devices} x {chosen.hardware}" if chosen.devices > 1 else chosen.hardware
    if cheaper:
        reason = (
            f"at the measured peak ({seen.peak_rps:.3g} rps) {chosen.replicas} replica(s) on "
            f"{where} meet the intent for ${chosen.monthly_usd:,.2f} a month instead of "
            f"${baseline:,.2f} on {hardware} ({chosen.basis})"
        )
    else:
        reason = (
            f"{hardware} cannot meet the p95 target of {intent.slo.p95_latency_ms:g} ms at the "
            f"measured peak ({sized}); {chosen.replicas} replica(s) on {where} can "
            f"({chosen.basis})"
        )
    return [
        Proposal(
            "cheaper_hardware" if cheaper else "faster_hardware",
            reason,
            {
                "monthly_usd": round(chosen.monthly_usd - baseline, 2),
                "p95_ms": _round(chosen.p95_ms if chosen.p95_ms is not None else now_p95),
            },
            diff,
        )
    ]


def _batching(intent: Intent, seen: Observed) -> list[Proposal]:
    if intent.task not in (Task.TABULAR, Task.VISION) or intent.batching is not None:
        return []
    if seen.peak_rps < BATCHING_MIN_RPS:
        return []
    batching = IntentBatching()
    p95 = None if seen.p95_ms is None else seen.p95_ms + batching.max_wait_ms
    reason = (
        f"the busiest minute averaged {seen.peak_rps:.3g} rps with batching off: batches of up "
        f"to {batching.max_batch_size} run as one call, which raises a replica's throughput, "
        f"for at most {batching.max_wait_ms:g} ms of waiting per request"
    )
    return [
        Proposal(
            "enable_batching",
            reason,
            {"monthly_usd": None, "p95_ms": _round(p95)},
            [_change("batching", None, batching.model_dump())],
        )
    ]


def _slo(intent: Intent, seen: Observed) -> list[Proposal]:
    target = intent.slo.p95_latency_ms
    proposals: list[Proposal] = []
    if target is not None and seen.p95_ms is not None and seen.requests >= SLO_MIN_REQUESTS:
        slow_share = seen.slow / seen.slo_requests if seen.slo_requests else 0.0
        if seen.p95_ms > target or slow_share > AT_RISK_SLOW_SHARE:
            relaxed = float(math.ceil(seen.p95_ms * 1.2))
            proposals.append(
                Proposal(
                    "slo_at_risk",
                    f"p95 was {seen.p95_ms:.1f} ms against a target of {target:g} ms "
                    f"({slow_share:.1%} of requests slower): add replicas or faster hardware "
                    "(see the other proposals), or promise what the endpoint delivers",
                    {"monthly_usd": None, "p95_ms": _round(seen.p95_ms)},
                    [_change("slo.p95_latency_ms", target, max(relaxed, target))],
                )
            )
        elif seen.p95_ms < target * NEVER_AT_RISK:
            tighter = float(max(math.ceil(seen.p95_ms * 2), 1))
            proposals.append(
                Proposal(
                    "slo_never_at_risk",
                    f"p95 was {seen.p95_ms:.1f} ms, under {NEVER_AT_RISK:.0%} of the "
                    f"{target:g} ms target over {seen.requests} requests: a tighter target "
                    "would catch a regression sooner, or cheaper hardware would still meet it",
                    {"monthly_usd": None, "p95_ms": _round(seen.p95_ms)},
                    [_change("slo.p95_latency_ms", target, tighter)],
                )
            )
    error_rate = seen.errors / seen.requests if seen.requests else 0.0
    if seen.requests >= SLO_MIN_REQUESTS and error_rate > intent.slo.max_error_rate:
        proposals.append(
            Proposal(
                "slo_at_risk",
                f"{error_rate:.1%} of requests failed, over slo.max_error_rate "
                f"({intent.slo.max_error_rate:.1%}): every rollout would be rolled back; look "
                "at the errors (modelport usage events) before changing the objective",
                {"monthly_usd": None, "p95_ms": None},
                [],
            )
        )
    return proposals
