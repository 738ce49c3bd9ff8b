"""What ``/metrics`` reads from live state at each scrape: requests in flight and queued,
replicas by state, rollouts, error budgets. The server registers a provider for each; the
gateway, the control plane and the rollout controller report in the small types below.
Nothing here runs per request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelport.core.enums import RolloutState

__all__ = ["Budget", "LiveState", "Load", "ReplicaCount", "RolloutProgress", "budgets_of", "read"]

log = logging.getLogger("modelport.metrics")

LABELS = ("endpoint", "revision", "task")
_ROLLOUT_STATES = tuple(state for state in RolloutState if state.active)


# -- live state, as the server's providers report it -----------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """A revision's requests at its replicas now, and those waiting for a connection."""

    endpoint: str
    revision: str
    task: str
    in_flight: int
    queued: int


@dataclass(frozen=True, slots=True)
class ReplicaCount:
    """How many of a revision's replicas are in one state."""

    endpoint: str
    revision: str
    task: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    """A rollout in progress: its new revision, state, step (1-based; 0 while it starts) and
    the share of traffic the new revision takes."""

    endpoint: str
    revision: str
    state: str
    step: int
    steps: int
    traffic_ratio: float


@dataclass(frozen=True, slots=True)
class Budget:
    """The share of one objective's error budget left in the SLO window (may go below 0)."""

    endpoint: str
    objective: str  # "availability" | "latency"
    remaining: float


# -- the live-state collector -------------------------------------------------------------------


def _nothing() -> Iterable[Any]:
    return ()


class LiveState(Collector):
    """Gauges computed at scrape time from the registered providers. A provider that fails
    costs its own metrics for that scrape, never the scrape."""

    def __init__(self) -> None:
        self.load: Callable[[], Iterable[Load]] = _nothing
        self.replicas: Callable[[], Iterable[ReplicaCount]] = _nothing
        self.rollouts: Callable[[], Iterable[RolloutProgress]] = _nothing
        self.budgets: Callable[[], Any] = _nothing

    def describe(self) -> Iterable[Metric]:
        # The names this collector owns, so that the registry refuses duplicates of them.
        return [*self._load(()), *self._replicas(()), *self._rollouts(()), *self._budgets(())]

    def collect(self) -> Iterable[Metric]:
        yield from self._load(read(self.load, "load"))
        yield from self._replicas(read(self.replicas, "replicas"))
        yield from self._rollouts(read(self.rollouts, "rollouts"))
        yield from self._budgets(budgets_of(_read_any(self.budgets, "error budgets")))

    @staticmethod
    def _load(samples: Iterable[Load]) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "modelport_requests_in_flight",
            "Requests sent to a revision's replicas and not yet answered.",
            labels=LABELS,
        )
        queued = GaugeMetricFamily(
            "modelport_requests_queued",
            "Requests waiting in the gateway for a free connection to a revision's replicas "
            "(MODELPORT_UPSTREAM_MAX_CONNECTIONS each).",
            labels=LABELS,
        )
        for sample in samples:
            labels = [sample.endpoint, sample.revision, sample.task]
            in_flight.add_metric(labels, sample.in_flight)
            queued.add_metric(labels, sample.queued)
        yield in_flight
        yield queued

    @staticmethod
    def _replicas(samples: Iterable[ReplicaCount]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelport_replicas",
            "Replicas of each revision by state (starting, ready, unhealthy, restarting, "
            "failed, stopped); an external endpoint counts as one ready replica.",
            labels=[*LABELS, "state"],
        )
        for sample in samples:
            family.add_metric(
                [sample.endpoint, sample.revision, sample.task, sample.state], sample.count
            )
        yield family

    @staticmethod
    def _rollouts(samples: Iterable[RolloutProgress]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "modelport_rollout_state",
            "1 for the state a rollout in progress is in, 0 for the other active states; the "
            "revision is the one being rolled out.",
            labels=["endpoint", "revision", "state"],
        )
        step = GaugeMetricFamily(
            "modelport_rollout_step",
            "The step a rollout is at, from 1 (0 while its new revision starts).",
            labels=["endpoint", "revision"],
        )
        steps = GaugeMetricFamily(
            "modelport_rollout_steps",
            "How many steps the rollout has.",
            labels=["endpoint", "revision"],
        )
        traffic = GaugeMetricFamily(
            "modelport_rollout_traffic_ratio",
            "The share of live traffic (0-1) the new revision takes.",
            labels=["endpoint", "revision"],
        )
        for sample in samples:
            labels = [sample.endpoint, sample.revision]
            for active in _ROLLOUT_STATES:
                state.add_metric([*labels, active.value], float(sample.state == active.value))
            step.add_metric(labels, sample.step)
            steps.add_metric(labels, sample.steps)
            traffic.add_metric(labels, sample.traffic_ratio)
        yield from (state, step, steps, traffic)

    @staticmethod
    def _budgets(samples: Iterable[Budget]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelport_slo_error_budget_remaining_ratio",
            "The share of each SLO objective's error budget left in its window (1: untouched, "
            "0: spent, below 0: overspent).",
            labels=["endpoint", "objective"],
        )
        for sample in samples:
            family.add_metric([sample.endpoint, sample.objective], sample.remaining)
        yield family


def read(provider: Callable[[], Iterable[Any]], what: str) -> list[Any]:
    try:
        return list(provider())
    except Exception:
        log.exception("metrics: reading %s failed; left out of this scrape", what)
        return []


def _read_any(provider: Callable[[], Any], what: str) -> Any:
    try:
        return provider()
    except Exception:
        log.exception("metrics: reading %s failed; left out of this scrape", what)
        return ()


def budgets_of(snapshot: Any) -> list[Budget]:
    """The error budgets in an SLO snapshot (``SloBook.snapshot()``).

    Takes ``Budget`` items as they are; otherwise each endpoint's state (a mapping of
    endpoint to state, or states that carry their ``endpoint``) holds ``objectives``: a
    mapping of objective name to its status, or statuses that name their ``objective``
    (a name, or an object with a ``name``). A status's ``budget_remaining`` is the number
    shown; objects and dicts alike. Anything else is skipped: the SLO part may change its
    shape without breaking a scrape."""
    if not snapshot:
        return []
    if isinstance(snapshot, Mapping):
        states: Iterable[tuple[Any, Any]] = snapshot.items()
    else:
        states = ((_field(state, "endpoint"), state) for state in snapshot)
    budgets = []
    for endpoint, state in states:
        if isinstance(state, Budget):
            budgets.append(state)
            continue
        objectives = _field(state, "objectives") or ()
        if isinstance(objectives, Mapping):
            pairs: Iterable[tuple[Any, Any]] = objectives.items()
        else:
            pairs = ((_name(_field(status, "objective")), status) for status in objectives)
        for objective, status in pairs:
            remaining = status if _is_number(status) else _field(status, "budget_remaining")
            if endpoint and objective and _is_number(remaining):
                budgets.append(Budget(str(endpoint), str(objective), float(remaining)))
    return budgets


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _name(objective: Any) -> Any:
    return objective if isinstance(objective, str) else _field(objective, "name")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
