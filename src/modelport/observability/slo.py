"""Error budgets and multi-window, multi-burn-rate alerts: pure arithmetic over event counts.

An endpoint's SLO has up to two objectives, each over the same window (28 days by default):

- availability ``A`` %: an event is bad when it failed (status >= 500); ``1 - A`` of the
  valid events may be bad;
- p95 latency under ``X`` ms: an event is bad when it took longer than ``X``; 5 % may be.

Valid events are the judged, non-4xx requests (``slo_requests`` in the usage rollups). The
*burn rate* over a window is the bad fraction divided by the allowed one: 1 spends the budget
in exactly the SLO window, 14.4 spends a 30-day budget in two days. The *budget remaining* is
``1 - bad / (allowed * valid)`` over the SLO window: 1 untouched, 0 spent, negative overspent.

Alerts follow the SRE workbook ("Alerting on SLOs", table 5-8): each rule names how much of
the budget a long window may consume (2 % in 1 h, 5 % in 6 h, 10 % in 3 d) and fires while
the burn rate is over ``consumed * slo_window / long_window`` in the long window AND in a
short one (1/12 of it), so an alert resets minutes after the burning stops. For a 30-day
window the thresholds are the workbook's 14.4, 6 and 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BUDGET_THRESHOLDS",
    "BURN_RULES",
    "BURN_WINDOWS",
    "DEFAULT_WINDOW_S",
    "LATENCY_ALLOWED",
    "AlertCondition",
    "BurnRule",
    "Counts",
    "Objective",
    "ObjectiveStatus",
    "SloSpec",
    "SloStatus",
    "budget_remaining",
    "burn_rate",
    "evaluate",
    "format_window",
]

DEFAULT_WINDOW_S = 28 * 86_400.0
#: The p95 objective: at most this fraction of valid events may be slower than the target.
LATENCY_ALLOWED = 0.05
# An availability of 100 % leaves no budget, and every rate against it is infinite; the
# smallest budget measured is one bad event in a million.
_MIN_ALLOWED = 1e-6

#: The windows burn rates are reported over, in seconds, by name.
BURN_WINDOWS: Mapping[str, float] = {
    "5m": 300.0,
    "30m": 1_800.0,
    "1h": 3_600.0,
    "2h": 7_200.0,
    "6h": 21_600.0,
    "1d": 86_400.0,
    "3d": 259_200.0,
}
#: Budget-remaining levels that open an alert when reached (and close it when left).
BUDGET_THRESHOLDS = (0.5, 0.25, 0.0)

ObjectiveName = Literal["availability", "latency"]
Severity = Literal["page", "ticket"]


@dataclass(frozen=True, slots=True)
class BurnRule:
    """Fire while the burn rate is over ``threshold(window)`` in both windows."""

    severity: Severity
    long: str  # a key of BURN_WINDOWS
    short: str
    budget_consumed: float  # of the whole budget, in the long window

    def threshold(self, slo_window_s: float) -> float:
        """The burn rate at which the long window consumes ``budget_consumed``."""
        return self.budget_consumed * slo_window_s / BURN_WINDOWS[self.long]

    @property
    def name(self) -> str:
        return f"{self.long}/{self.short}"


#: The SRE workbook's recommended rules, most urgent first.
BURN_RULES = (
    BurnRule("page", "1h", "5m", 0.02),
    BurnRule("page", "6h", "30m", 0.05),
    BurnRule("ticket", "3d", "6h", 0.10),
)


@dataclass(frozen=True, slots=True)
class Objective:
    """One promise: ``availability`` (``target`` in %) or ``latency`` (p95 under ``target``
    ms); ``allowed`` is the fraction of valid events that may be bad."""

    name: ObjectiveName
    target: float
    allowed: float

    @classmethod
    def availability(cls, percent: float) -> Objective:
        # round(): 1 - 0.999 is 0.0010000000000000009, which would show in every message.
        return cls("availability", percent, max(round(1 - percent / 100, 12), _MIN_ALLOWED))

    @classmethod
    def latency(cls, p95_ms: float) -> Objective:
        return cls("latency", p95_ms, LATENCY_ALLOWED)

    def describe(self) -> str:
        if self.name == "availability":
            return f"availability {self.target:g}%"
        return f"p95 latency under {self.target:g} ms"


@dataclass(frozen=True, slots=True)
class SloSpec:
    """An endpoint's objectives over its window."""

    objectives: tuple[Objective, ...]
    window_s: float = DEFAULT_WINDOW_S

    @classmethod
    def of(
        cls,
        *,
        availability: float | None,
        p95_latency_ms: float | None,
        window_s: float | None = None,
    ) -> SloSpec | None:
        """The SLO an intent's ``slo`` section states, or ``None`` when it states neither
        objective (``max_error_rate`` alone only gates rollouts)."""
        objectives = []
        if availability is not None:
            objectives.append(Objective.availability(availability))
        if p95_latency_ms is not None:
            objectives.append(Objective.latency(p95_latency_ms))
        if not objectives:
            return None
        return cls(tuple(objectives), window_s or DEFAULT_WINDOW_S)

    @property
    def latency_target_ms(self) -> float | None:
        return next((o.target for o in self.objectives if o.name == "latency"), None)


@dataclass(frozen=True, slots=True)
class Counts:
    """Events in one window: ``valid`` (judged, not 4xx), of which ``errors`` failed (5xx) and
    ``slow`` took longer than the latency target."""

    valid: int = 0
    errors: int = 0
    slow: int = 0

    def bad(self, objective: Objective) -> int:
        return self.errors if objective.name == "availability" else self.slow

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.valid + other.valid, self.errors + other.errors, self.slow + other.slow)


def burn_rate(counts: Counts, objective: Objective) -> float:
    """How many times faster than allowed the window's events spend the budget (0: none)."""
    if counts.valid <= 0:
        return 0.0
    return min(counts.bad(objective), counts.valid) / counts.valid / objective.allowed


def budget_remaining(counts: Counts, objective: Objective) -> float:
    """The fraction of the window's budget left: 1 untouched, 0 spent, below 0 overspent."""
    return 1.0 - burn_rate(counts, objective)


@dataclass(frozen=True, slots=True)
class AlertCondition:
    """An alert that should be open now; ``key`` identifies its episode."""

    key: str
    kind: str
    endpoint: str
    summary: str
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class ObjectiveStatus:
    objective: Objective
    counts: Counts  # over the SLO window
    sli: float | None  # good / valid over the SLO window; None without events
    budget_remaining: float
    burn_rates: Mapping[str, float]  # by BURN_WINDOWS name
    firing: tuple[BurnRule, ...]  # every rule over its threshold in both windows

    def to_dict(self, window_s: float) -> dict[str, object]:
        return {
            "objective": self.objective.name,
            "target": self.objective.target,
            "description": self.objective.describe(),
            "allowed_bad_fraction": self.objective.allowed,
            "valid_events": self.counts.valid,
            "bad_events": self.counts.bad(self.objective),
            "sli": self.sli,
            "budget_remaining": self.budget_remaining,
            "burn_rates": dict(self.burn_rates),
            "alerts": [
                {
                    "severity": rule.severity,
                    "windows": rule.name,
                    "threshold": round(rule.threshold(window_s), 4),
                    "firing": rule in self.firing,
                }
                for rule in BURN_RULES
            ],
        }


@dataclass(frozen=True, slots=True)
class SloStatus:
    """An endpoint's SLO evaluated at ``at``; ``budget_remaining`` is its worst objective's,
    since missing either objective misses the SLO."""

    endpoint: str
    spec: SloSpec
    at: float
    objectives: tuple[ObjectiveStatus, ...]
    counts: Counts = field(default_factory=Counts)

    @property
    def budget_remaining(self) -> float:
        return min(s.budget_remaining for s in self.objectives)

    @property
    def sli(self) -> float | None:
        """Good / valid with bad = errors + slow (an event can be both: counted once)."""
        if self.counts.valid <= 0:
            return None
        bad = min(self.counts.valid, self.counts.errors + self.counts.slow)
        return 1.0 - bad / self.counts.valid

    def alerts(self) -> list[AlertCondition]:
        """What should be open: per objective, the most urgent firing burn rule's severity
        (a ticket waits while a page is open) and every budget threshold reached."""
        conditions = []
        for status in self.objectives:
            objective = status.objective
            if status.firing:
                rule = status.firing[0]
                rate = status.burn_rates[rule.long]
                threshold = rule.threshold(self.spec.window_s)
                conditions.append(
                    AlertCondition(
                        key=f"slo:{self.endpoint}:{objective.name}:burn:{rule.severity}",
                        kind="slo_burn",
                        endpoint=self.endpoint,
                        summary=(
                            f"{self.endpoint}: {objective.describe()} error budget burning "
                            f"{rate:.1f}x over {rule.long} ({rule.severity}: over "
                            f"{threshold:.3g}x in {rule.long} and {rule.short})"
                        ),
                        data={
                            "objective": objective.name,
                            "severity": rule.severity,
                            "windows": [r.name for r in status.firing],
                            "threshold": threshold,
                            "burn_rates": dict(status.burn_rates),
                            "budget_remaining": status.budget_remaining,
                        },
                    )
                )
            for level in BUDGET_THRESHOLDS:
                if status.budget_remaining > level:
                    continue
                what = "spent" if level == 0 else f"at or below {level:.0%} remaining"
                left = status.budget_remaining
                used = f"{left:.1%} left" if left >= 0 else f"{1 - left:.1f}x the budget used"
                conditions.append(
                    AlertCondition(
                        key=f"slo:{self.endpoint}:{objective.name}:budget:{level:g}",
                        kind="slo_budget",
                        endpoint=self.endpoint,
                        summary=(
                            f"{self.endpoint}: {objective.describe()} error budget {what} "
                            f"({used} over {format_window(self.spec.window_s)})"
                        ),
                        data={
                            "objective": objective.name,
                            "threshold": level,
                            "budget_remaining": status.budget_remaining,
                        },
                    )
                )
        return conditions

    def to_dict(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "window": format_window(self.spec.window_s),
            "window_s": self.spec.window_s,
            "sli": self.sli,
            "budget_remaining": self.budget_remaining,
            "objectives": [s.to_dict(self.spec.window_s) for s in self.objectives],
        }


def evaluate(
    endpoint: str,
    spec: SloSpec,
    window: Counts,
    burn: Mapping[str, Counts],
    *,
    at: float,
) -> SloStatus:
    """The SLO's status from the counts over its window and over each of ``BURN_WINDOWS``
    (a window missing from ``burn`` had no events)."""
    statuses = []
    for objective in spec.objectives:
        rates = {name: burn_rate(burn.get(name, Counts()), objective) for name in BURN_WINDOWS}
        threshold = {rule: rule.threshold(spec.window_s) for rule in BURN_RULES}
        firing = tuple(
            rule
            for rule in BURN_RULES
            if rates[rule.long] > threshold[rule] and rates[rule.short] > threshold[rule]
        )
        sli = None
        if window.valid > 0:
            sli = 1.0 - min(window.bad(objective), window.valid) / window.valid
        statuses.append(
            ObjectiveStatus(
                objective=objective,
                counts=window,
                sli=sli,
                budget_remaining=budget_remaining(window, objective),
                burn_rates=rates,
                firing=firing,
            )
        )
    return SloStatus(endpoint, spec, at, tuple(statuses), window)


def format_window(seconds: float) -> str:
    """``28d``, ``12h`` or ``90m``: the largest whole unit."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
