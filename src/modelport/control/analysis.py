"""The SLO decides: is a rollout step's window good enough to go on, bad enough to roll back,
or too early to tell? Pure, so it is unit-tested directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from modelport.observability.windows import WindowStats

__all__ = ["Gates", "Verdict", "both", "judge"]


@dataclass(frozen=True, slots=True)
class Gates:
    """What a step must show: the endpoint's SLO and the rollout's evidence threshold."""

    max_error_rate: float
    p95_latency_ms: float | None
    min_requests: int
    interval_s: float

    @classmethod
    def of(cls, plan: dict[str, Any]) -> Gates:
        return cls(
            max_error_rate=plan["max_error_rate"],
            p95_latency_ms=plan.get("p95_latency_ms"),
            min_requests=plan["min_requests"],
            interval_s=plan["interval_s"],
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Literal["pass", "fail", "wait"]
    reason: str


def judge(stats: WindowStats, gates: Gates, elapsed_s: float) -> Verdict:
    """Fail as soon as a window with enough requests breaches the SLO; pass once the step was
    held for its interval with enough requests and no breach; otherwise wait."""
    enough = stats.requests >= gates.min_requests
    if enough and stats.requests:
        if stats.error_rate > gates.max_error_rate:
            return Verdict(
                "fail",
                f"error rate {stats.error_rate:.2%} ({stats.errors} of {stats.requests} "
                f"requests) breaches the SLO's {gates.max_error_rate:.2%}",
            )
        p95 = stats.p95_ms
        if gates.p95_latency_ms is not None and p95 is not None and p95 > gates.p95_latency_ms:
            return Verdict(
                "fail",
                f"p95 latency {p95:.1f} ms over {stats.requests} requests breaches the SLO's "
                f"{gates.p95_latency_ms:g} ms",
            )
    if elapsed_s < gates.interval_s:
        return Verdict("wait", f"held {elapsed_s:.0f} of {gates.interval_s:g} s")
    if not enough:
        missing = gates.min_requests - stats.requests
        return Verdict("wait", f"waiting for {missing} more requests to judge the step")
    return Verdict(
        "pass",
        f"{stats.requests} requests, error rate {stats.error_rate:.2%}, "
        f"p95 {stats.p95_ms or 0:.1f} ms: within the SLO",
    )


def both(first: Verdict, second: Verdict | None) -> Verdict:
    """Two gates on one step (the SLO, and another such as output drift; ``None``: none):
    either failing fails it, it passes once both pass, and otherwise it waits for the one
    that does not pass yet."""
    if second is None or first.decision == "fail":
        return first
    if second.decision == "fail" or (first.decision == "pass" and second.decision == "wait"):
        return second
    return first
