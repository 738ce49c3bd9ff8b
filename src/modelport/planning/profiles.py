"""Measured sizing: what a ``modelport bench`` profile says one replica sustains.

A profile is a handful of points (closed-loop load at several concurrencies): each gives the
throughput reached and the latency percentiles at it. Between points latency is interpolated
over throughput, monotonically (more load never predicts less latency); beyond the highest
measured throughput the answer is honestly ``None``, not an extrapolation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

__all__ = ["Profile", "ProfilePoint", "capacity", "predict_p95"]


@dataclass(frozen=True, slots=True)
class ProfilePoint:
    """One measured load level: closed loop at ``concurrency`` reached ``rps``."""

    concurrency: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True, slots=True)
class Profile:
    """A bench run's points on one hardware type, with the machine it ran on."""

    hardware: str
    points: tuple[ProfilePoint, ...]
    machine: Mapping[str, Any] = field(default_factory=dict)


def capacity(profile: Profile, p95_target_ms: float | None) -> float:
    """The rps one replica sustains with p95 within ``p95_target_ms`` (no target: the highest
    measured throughput). 0.0 when even the lightest measured load misses the target."""
    curve = _curve(profile)
    if not curve:
        return 0.0
    if p95_target_ms is None:
        return curve[-1][0]
    best = 0.0
    previous: tuple[float, float] | None = None
    for rps, p95 in curve:
        if p95 <= p95_target_ms:
            best = rps
        elif previous is not None and previous[1] <= p95_target_ms:
            # The target is crossed between two points: interpolate where.
            low_rps, low_p95 = previous
            share = (p95_target_ms - low_p95) / (p95 - low_p95)
            return low_rps + share * (rps - low_rps)
        else:
            break
        previous = (rps, p95)
    return best


def predict_p95(profile: Profile, rps_per_replica: float) -> float | None:
    """The p95 at ``rps_per_replica``, interpolated between measured points; ``None`` beyond
    the highest measured throughput (the replica may not sustain it at all)."""
    curve = _curve(profile)
    if not curve or rps_per_replica > curve[-1][0] * (1 + 1e-9):
        return None
    if rps_per_replica <= curve[0][0]:
        # Below the lightest measured load latency does not fall further: a request alone
        # still takes what it takes.
        return curve[0][1]
    for (low_rps, low_p95), (high_rps, high_p95) in pairwise(curve):
        if rps_per_replica <= high_rps:
            if high_rps == low_rps:
                return high_p95
            share = (rps_per_replica - low_rps) / (high_rps - low_rps)
            return low_p95 + share * (high_p95 - low_p95)
    return curve[-1][1]


def _curve(profile: Profile) -> list[tuple[float, float]]:
    """(rps, p95) points, by throughput, made monotone: throughput that a higher concurrency
    did not raise (the replica saturated) is dropped, and p95 never falls as rps grows
    (noise in a short run can make it dip, which would promise more than was measured)."""
    points = sorted(
        (p for p in profile.points if p.rps > 0 and p.errors == 0),
        key=lambda p: (p.concurrency, p.rps),
    )
    curve: list[tuple[float, float]] = []
    for point in points:
        if curve and point.rps <= curve[-1][0]:
            # Saturated: more concurrency, no more throughput; its latency is the queue's.
            continue
        p95 = max(point.p95_ms, curve[-1][1]) if curve else point.p95_ms
        curve.append((point.rps, p95))
    return curve
