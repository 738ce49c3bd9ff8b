"""The planner: from an intent's traffic, SLO, budget and sensitivity to the cheapest
environment x hardware x devices x replicas that meets them.

Every candidate is judged (``candidates``); ``plan`` picks the cheapest feasible one (ties: the
lower p95), lists the cheaper options it rejected and the faster ones it did not need, and for
an impossible intent says why and which option comes closest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from modelport.planning.catalog import Catalog, HardwareType
from modelport.planning.llm import LlmModel, estimate_llm
from modelport.planning.profiles import Profile, capacity, predict_p95

__all__ = [
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

_SENSITIVITY_KINDS = {
    "restricted": ("isolated",),
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
    """Why infeasible; None when feasible."""

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
    reason: str | None
    rejected_cheaper: list[Option]
    rejected_faster: list[Option]

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
    """Every option for ``inp``, each with its feasibility judged (``reason`` None = feasible)."""
    raise NotImplementedError


def plan(inp: PlanInput, catalog: Catalog) -> Plan:
    """The cheapest feasible option (ties: lower p95), or the reason none is and the closest."""
    raise NotImplementedError


def _unused(*_: object) -> tuple[Any, ...]:  # keeps imports honest until the body lands
    return (math, HardwareType, estimate_llm, capacity, predict_p95)
