"""Drift math: feature profiles, PSI, the two-sample Kolmogorov-Smirnov test, live windows.

Pure numpy, no I/O. A ``FeatureProfile`` is a bounded summary of one feature's reference
values: for a number, quantile bin edges with the reference's share in each bin (for PSI)
and an evenly spaced sample of its sorted values (for KS); for a category (a predicted
class), each category's share. A ``RevisionDrift`` holds one revision's live windows and
its references, and scores every feature against them.

Thresholds (``Thresholds``): a feature *drifts* when its PSI reaches ``psi_drift`` (0.2) or
when the KS test rejects "same distribution" at ``ks_alpha`` (0.01) Bonferroni-divided by the
number of features scored together, with a statistic of at least ``ks_min_statistic`` (0.1:
large windows make tiny, harmless differences significant); it *warns* from ``psi_warn``
(0.1). Fewer than ``min_rows`` live values give ``insufficient``: no verdict either way.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "FeatureProfile",
    "FeatureScore",
    "Profile",
    "RevisionDrift",
    "Status",
    "Thresholds",
    "categorical_profile",
    "categorical_psi",
    "image_statistics",
    "kolmogorov_sf",
    "ks_2samp",
    "numeric_profile",
    "psi",
]

Status = Literal["ok", "warn", "drift", "insufficient", "baseline"]
Kind = Literal["numeric", "categorical"]
Group = Literal["input", "output", "usage", "latency"]

BINS = 10
KS_SAMPLE = 500  # reference values kept for KS; the p-value uses this as the sample size
MAX_CATEGORIES = 64  # a "class" output with more distinct values is not a class
_EPSILON = 1e-4  # floor on bin shares: an empty bin would make PSI infinite


@dataclass(frozen=True, slots=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_drift: float = 0.2
    ks_alpha: float = 0.01
    ks_min_statistic: float = 0.1
    min_rows: int = 300
    latency_factor: float = 1.5  # latency drifts when its p95 is this many times the baseline's


# -- statistics ----------------------------------------------------------------------------------


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins:
    ``sum((a - e) * ln(a / e))``, each share floored at 1e-4 so an empty bin stays finite."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), _EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), _EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: ``2 sum (-1)^(k-1) exp(-2 k^2 x^2)``."""
    if x < 0.2:  # the series converges slowly there, and the answer is 1 to 1e-9
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-12:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: the statistic (largest gap between the two empirical
    CDFs, ties handled) and its asymptotic two-sided p-value with Stephens' small-sample
    correction (Numerical Recipes' ``kstwo``)."""
    x = np.sort(np.asarray(a, dtype=np.float64))
    y = np.sort(np.asarray(b, dtype=np.float64))
    n, m = len(x), len(y)
    if not n or not m:
        return 0.0, 1.0
    points = np.concatenate([x, y])
    gap = np.abs(np.searchsorted(x, points, "right") / n - np.searchsorted(y, points, "right") / m)
    statistic = float(gap.max())
    root = math.sqrt(n * m / (n + m))
    return statistic, kolmogorov_sf((root + 0.12 + 0.11 / root) * statistic)


def image_statistics(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's mean and standard deviation of intensity (one image per row)."""
    flat = np.asarray(pixels, dtype=np.float64).reshape(len(pixels), -1)
    return flat.mean(axis=1), flat.std(axis=1)


# -- profiles ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    """A bounded summary of one feature's reference values (see the module docstring)."""

    name: str
    kind: Kind
    group: Group
    rows: int
    edges: tuple[float, ...] = ()  # numeric: inner bin edges, ascending
    shares: tuple[float, ...] = ()  # numeric: len(edges) + 1 bins; categorical: per category
    categories: tuple[str, ...] = ()
    sample: tuple[float, ...] = ()  # numeric: sorted, at most KS_SAMPLE values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureProfile:
        return cls(
            name=data["name"],
            kind=data["kind"],
            group=data["group"],
            rows=int(data["rows"]),
            edges=tuple(data.get("edges", ())),
            shares=tuple(data.get("shares", ())),
            categories=tuple(data.get("categories", ())),
            sample=tuple(data.get("sample", ())),
        )

    def live_shares(self, values: Sequence[Any]) -> np.ndarray:
        """The share of ``values`` in each of this profile's bins or categories (values of an
        unseen category count toward none, so the known shares sum to less than one)."""
        if self.kind == "numeric":
            bins = np.searchsorted(np.asarray(self.edges), np.asarray(values, float), "right")
            counts = np.bincount(bins, minlength=len(self.edges) + 1).astype(np.float64)
        else:
            index = {category: i for i, category in enumerate(self.categories)}
            counts = np.zeros(len(self.categories))
            for value in values:
                position = index.get(str(value))
                if position is not None:
                    counts[position] += 1
        return np.asarray(counts, dtype=np.float64) / max(len(values), 1)


def numeric_profile(
    name: str, values: Iterable[float], group: Group = "input", *, bins: int = BINS
) -> FeatureProfile:
    """Quantile bins (duplicate edges of tied values merged) and a KS sample of ``values``."""
    data = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float)
    data = data[np.isfinite(data)]
    if not len(data):
        return FeatureProfile(name, "numeric", group, 0)
    edges = np.unique(np.quantile(data, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, data, "right"), minlength=len(edges) + 1)
    ordered = np.sort(data)
    if len(ordered) > KS_SAMPLE:  # evenly spaced order statistics keep the shape of the CDF
        ordered = ordered[np.linspace(0, len(ordered) - 1, KS_SAMPLE).round().astype(int)]
    return FeatureProfile(
        name=name,
        kind="numeric",
        group=group,
        rows=len(data),
        edges=tuple(float(e) for e in edges),
        shares=tuple(float(c) for c in counts / len(data)),
        sample=tuple(float(v) for v in ordered),
    )


def categorical_profile(
    name: str, values: Iterable[Any], group: Group = "output"
) -> FeatureProfile:
    """Each category's share of ``values`` (at most ``MAX_CATEGORIES``, the most common)."""
    labels = [str(v) for v in values]
    found, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    keep = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
    total = max(len(labels), 1)
    return FeatureProfile(
        name=name,
        kind="categorical",
        group=group,
        rows=len(labels),
        categories=tuple(str(found[i]) for i in keep),
        shares=tuple(float(counts[i]) / total for i in keep),
    )


@dataclass(frozen=True, slots=True)
class Profile:
    """A model version's reference: how its inputs map to features, and each feature's
    profile. ``tensor`` set: ``columns`` are that input's columns, in order; unset: each
    column is an input tensor of its own name. ``image`` marks intensity statistics."""

    kind: Literal["tabular", "image", "lengths"]
    features: tuple[FeatureProfile, ...]
    columns: tuple[str, ...] = ()
    tensor: str | None = None
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "columns": list(self.columns),
            "tensor": self.tensor,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            kind=data["kind"],
            features=tuple(FeatureProfile.from_dict(f) for f in data["features"]),
            columns=tuple(data.get("columns", ())),
            tensor=data.get("tensor"),
            rows=int(data.get("rows", 0)),
        )


# -- scoring -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureScore:
    feature: str
    group: Group
    status: Status
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    live_rows: int
    reference_rows: int
    detail: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_feature(
    profile: FeatureProfile, values: Sequence[Any], thresholds: Thresholds, scored_together: int
) -> FeatureScore:
    """One feature's live ``values`` against its reference ``profile``."""
    rows = len(values)
    if rows < thresholds.min_rows or not profile.rows:
        return FeatureScore(
            profile.name, profile.group, "insufficient", None, None, None, rows, profile.rows
        )
    index = psi(profile.shares, profile.live_shares(values))
    statistic = pvalue = None
    status: Status = "ok"
    if index >= thresholds.psi_drift:
        status = "drift"
    elif index >= thresholds.psi_warn:
        status = "warn"
    if profile.kind == "numeric" and profile.sample:
        statistic, pvalue = ks_2samp(np.asarray(profile.sample), np.asarray(values, float))
        alpha = thresholds.ks_alpha / max(scored_together, 1)
        if pvalue < alpha and statistic >= thresholds.ks_min_statistic:
            status = "drift"
    detail: dict[str, float] = {}
    if profile.group == "latency" and profile.sample:
        # Latency is judged by its tail against the revision's own start, not by the shape
        # of its distribution: a faster revision, or a shift of a few percent, is no alarm.
        before, now = np.asarray(profile.sample), np.asarray(values, float)
        detail = {
            "baseline_p50": round(float(np.quantile(before, 0.5)), 3),
            "baseline_p95": round(float(np.quantile(before, 0.95)), 3),
            "p50": round(float(np.quantile(now, 0.5)), 3),
            "p95": round(float(np.quantile(now, 0.95)), 3),
        }
        status = (
            "drift" if detail["p95"] > thresholds.latency_factor * detail["baseline_p95"] else "ok"
        )
    return FeatureScore(
        profile.name,
        profile.group,
        status,
        round(index, 6),
        None if statistic is None else round(statistic, 6),
        pvalue,
        rows,
        profile.rows,
        detail,
    )


def categorical_psi(expected: Sequence[Any], actual: Sequence[Any]) -> float:
    """PSI between two samples of categories, over the categories either one has."""
    labels = sorted({str(v) for v in expected} | {str(v) for v in actual})
    index = {label: i for i, label in enumerate(labels)}

    def shares(values: Sequence[Any]) -> np.ndarray:
        counts = np.zeros(len(labels))
        for value in values:
            counts[index[str(value)]] += 1
        return counts / max(len(values), 1)

    return psi(shares(expected), shares(actual))


class RevisionDrift:
    """One revision's live values per feature, in windows of the last ``window_rows``.

    A feature with no reference in the stored profile (the predicted class when the
    reference data has no ``prediction`` column, token counts, latency) takes its first
    ``baseline_rows`` live values as its reference: the revision is compared with itself
    at its start. The window takes every value, those of the baseline too (a canary gate
    compares two revisions' windows from their first outputs). Not thread-safe: one owner
    (the drift scorer's thread) feeds and scores it.
    """

    def __init__(
        self, profile: Profile | None, *, window_rows: int = 1000, baseline_rows: int = 500
    ) -> None:
        self.profile = profile
        self.references: dict[str, FeatureProfile] = {
            f.name: f for f in (profile.features if profile else ())
        }
        self.windows: dict[str, deque[Any]] = {}
        self.groups: dict[str, Group] = {f.name: f.group for f in self.references.values()}
        self.kinds: dict[str, Kind] = {f.name: f.kind for f in self.references.values()}
        self._baselines: dict[str, list[Any]] = {}
        self._window_rows = window_rows
        self._baseline_rows = baseline_rows

    def add(self, feature: str, values: Iterable[Any], group: Group, kind: Kind) -> None:
        """Append live values; while a feature has no reference, they build its baseline."""
        self.groups.setdefault(feature, group)
        self.kinds.setdefault(feature, kind)
        values = list(values)
        if feature not in self.references:
            baseline = self._baselines.setdefault(feature, [])
            baseline.extend(values[: self._baseline_rows - len(baseline)])
            if len(baseline) >= self._baseline_rows:
                build = numeric_profile if kind == "numeric" else categorical_profile
                self.references[feature] = build(feature, baseline, group)
                del self._baselines[feature]
        window = self.windows.get(feature)
        if window is None:
            window = self.windows[feature] = deque(maxlen=self._window_rows)
        window.extend(values)

    def scores(self, thresholds: Thresholds) -> list[FeatureScore]:
        """Every feature's score; features still building a baseline say ``baseline``."""
        scores = []
        together = sum(1 for f in self.references if self.groups.get(f) == "input") or 1
        for feature in sorted(self.groups, key=lambda f: (self.groups[f], f)):
            live = list(self.windows.get(feature, ()))
            reference = self.references.get(feature)
            if reference is None:
                building = len(self._baselines.get(feature, ()))
                scores.append(
                    FeatureScore(
                        feature, self.groups[feature], "baseline", None, None, None, 0, building
                    )
                )
                continue
            scores.append(score_feature(reference, live, thresholds, together))
        return scores

    def window(self, feature: str) -> list[Any]:
        """A copy of ``feature``'s live window."""
        return list(self.windows.get(feature, ()))
