"""Shadow comparisons: the candidate answers a copy of live requests; its answers are
discarded and compared with the stable revision's.

Agreement (classifiers and other V2 models): both answered 200 with V2 JSON and every output
named alike has equal data (floats within a relative 1e-6). Output length (LLMs): the mean
output tokens of both sides. Latencies are kept for the first ``max_pairs`` pairs, counts for
all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ShadowComparison", "ShadowReports"]

_MAX_PAIRS = 10_000


def _outputs(body: bytes) -> dict[str, Any] | None:
    """A V2 response's outputs by name, or None if the body is not V2 JSON."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    outputs = payload.get("outputs") if isinstance(payload, dict) else None
    if not isinstance(outputs, list):
        return None
    named = {}
    for output in outputs:
        if not isinstance(output, dict) or "name" not in output:
            return None
        named[str(output["name"])] = output.get("data")
    return named


def _same(a: Any, b: Any) -> bool:
    # A stack, not recursion: orjson accepts 1024 levels of nesting, more than Python's
    # recursion limit allows, and a deeply nested body must not raise here.
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif not _same_scalar(x, y):
            return False
    return True


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool):
            return bool(a == b)
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return bool(a == b)


@dataclass(slots=True)
class _Side:
    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    counted_outputs: int = 0

    def add(self, status: int, latency_ms: float, keep: bool) -> None:
        self.requests += 1
        self.errors += status >= 500
        if keep:
            self.latencies_ms.append(latency_ms)

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def rank(percent: float) -> float | None:
            if not ordered:
                return None
            return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]

        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "p50_ms": rank(50),
            "p95_ms": rank(95),
        }


@dataclass(slots=True)
class ShadowComparison:
    """Everything compared so far for one candidate revision."""

    max_pairs: int = _MAX_PAIRS
    primary: _Side = field(default_factory=_Side)
    shadow: _Side = field(default_factory=_Side)
    compared: int = 0
    agreement_compared: int = 0
    agreed: int = 0
    token_pairs: int = 0

    def add(
        self,
        *,
        primary_status: int,
        primary_latency_ms: float,
        primary_body: bytes,
        primary_output_tokens: int,
        shadow_status: int,
        shadow_latency_ms: float,
        shadow_body: bytes,
        shadow_output_tokens: int,
    ) -> None:
        keep = self.compared < self.max_pairs
        self.compared += 1
        self.primary.add(primary_status, primary_latency_ms, keep)
        self.shadow.add(shadow_status, shadow_latency_ms, keep)
        if primary_status != 200 or shadow_status != 200:
            return
        if primary_output_tokens > 0 or shadow_output_tokens > 0:
            self.token_pairs += 1
            self.primary.output_tokens += primary_output_tokens
            self.shadow.output_tokens += shadow_output_tokens
        ours, theirs = _outputs(primary_body), _outputs(shadow_body)
        if ours is None or theirs is None:
            return
        self.agreement_compared += 1
        shared = ours.keys() & theirs.keys()
        if shared and all(_same(ours[name], theirs[name]) for name in shared):
            self.agreed += 1

    def report(self) -> dict[str, Any]:
        pairs = self.token_pairs
        return {
            "compared": self.compared,
            "primary": self.primary.report(),
            "shadow": self.shadow.report(),
            "agreement": {
                "compared": self.agreement_compared,
                "agreed": self.agreed,
                "rate": self.agreed / self.agreement_compared if self.agreement_compared else None,
            },
            "output_tokens": {
                "primary_mean": self.primary.output_tokens / pairs if pairs else None,
                "shadow_mean": self.shadow.output_tokens / pairs if pairs else None,
            },
        }


class ShadowReports:
    """One comparison per (endpoint, candidate revision)."""

    def __init__(self) -> None:
        self._reports: dict[tuple[str, str], ShadowComparison] = {}

    def get(self, endpoint: str, revision: str) -> ShadowComparison:
        key = (endpoint, revision)
        report = self._reports.get(key)
        if report is None:
            report = self._reports[key] = ShadowComparison()
        return report

    def report(self, endpoint: str, revision: str) -> dict[str, Any] | None:
        comparison = self._reports.get((endpoint, revision))
        return comparison.report() if comparison is not None else None

    def forget(self, endpoint: str, revision: str | None = None) -> None:
        for key in [k for k in self._reports if k[0] == endpoint]:
            if revision is None or key[1] == revision:
                del self._reports[key]
