"""An endpoint as the control plane runs it (``Serving``: its running revisions and how
traffic is spread over them), and how that looks from outside: the gateway's routing
snapshot, the replica counts that metrics show, each revision's share of live traffic.

The plane owns and changes ``Serving`` on the event loop; these functions only read it, so
what the gateway is told is built in one place from one state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from modelport.backends import Backend
from modelport.control.deployment import Deployment
from modelport.control.traffic import DEFAULT_CONSUMERS, traffic_of
from modelport.core.enums import ReplicaState
from modelport.core.intent import Routing
from modelport.core.routing import Route, RoutingSnapshot, Traffic
from modelport.observability.live_metrics import ReplicaCount
from modelport.runtimes.registry import OPENAI_USAGE_RUNTIMES

__all__ = ["Serving", "replica_counts_of", "shares_of", "snapshot_of"]


@dataclass(slots=True)
class Serving:
    """One endpoint's running revisions and how traffic is spread over them."""

    revisions: dict[str, Deployment]
    stable: str
    candidate: str | None = None
    weight: float = 0.0  # percent of traffic the candidate answers
    shadow_sample: float = 0.0  # share mirrored to the candidate instead
    previous: str | None = None  # a former stable revision kept warm (blue-green)
    routing: Routing | None = None
    consumers: frozenset[str] = DEFAULT_CONSUMERS  # who may call (control/traffic.py)


def snapshot_of(serving: Mapping[str, Serving], backend: Backend) -> RoutingSnapshot:
    """The routing snapshot of every served endpoint, with the replicas ready right now."""
    return RoutingSnapshot.of([_traffic(name, s, backend) for name, s in serving.items()])


def replica_counts_of(serving: Mapping[str, Serving], backend: Backend) -> list[ReplicaCount]:
    """How many replicas of each running revision are in each state; an external endpoint
    counts as one ready replica."""
    counts: list[ReplicaCount] = []
    for name, endpoint in serving.items():
        for label, deployment in endpoint.revisions.items():
            spec = deployment.spec
            states = Counter(
                [ReplicaState.READY]
                if deployment.remote is not None
                else [r.state for r in backend.status(spec.group)]
            )
            counts.extend(
                ReplicaCount(name, label, spec.task, state.value, states[state])
                for state in ReplicaState
            )
    return counts


def shares_of(serving: Serving | None) -> dict[str, float]:
    """Each running revision's percentage of unpinned live traffic."""
    if serving is None:
        return {}
    if serving.candidate is None or serving.shadow_sample > 0 or serving.weight <= 0:
        return {serving.stable: 100.0}
    weight = min(serving.weight, 100.0)
    return {serving.candidate: weight, serving.stable: 100.0 - weight}


def _route(name: str, deployment: Deployment, labels: list[str], backend: Backend) -> Route:
    spec = deployment.spec
    metadata = orjson.dumps(
        {
            "name": name,
            "versions": labels,
            "platform": spec.runtime,
            **deployment.signature.to_v2_metadata(),
        }
    )
    return Route(
        endpoint=name,
        model=spec.model,
        version=spec.version,
        metadata=metadata,
        token=deployment.token,
        replicas=(
            (deployment.remote_address,) if deployment.remote_address else backend.ready(spec.group)
        ),
        task=spec.task,
        remote=deployment.remote,
        label=deployment.label,
        openai_usage=spec.runtime in OPENAI_USAGE_RUNTIMES,
    )


def _traffic(name: str, serving: Serving, backend: Backend) -> Traffic:
    labels = sorted(serving.revisions, key=lambda label: int(label[1:]))
    routes = {
        label: _route(name, deployment, labels, backend)
        for label, deployment in serving.revisions.items()
    }
    return traffic_of(
        routes,
        stable=serving.stable,
        candidate=serving.candidate,
        weight=serving.weight,
        shadow_sample=serving.shadow_sample,
        previous=serving.previous,
        routing=serving.routing,
        consumers=serving.consumers,
    )
