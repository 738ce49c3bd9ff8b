"""What the API shows of endpoints and revisions: stored rows joined with the live state of
the plane (which revisions run, their replicas, their share of traffic).

Routes that build these views run in a thread pool while the plane and the supervisor change
the live state on the event loop, so the live part is read in one go on the loop
(``ControlPlane.on_loop``) and the rows are read in the route's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelport.backends import ReplicaStatus
from modelport.control.plane import FAILED_AFTER_RESTARTS, ControlPlane, Deployment
from modelport.control.schemas import EndpointPublic, RevisionPublic
from modelport.core.enums import EndpointStatus, RolloutState
from modelport.store.tables import EndpointRow

__all__ = ["LiveEndpoint", "endpoint_public", "live_endpoint", "revisions_public"]


@dataclass(frozen=True, slots=True)
class LiveEndpoint:
    """One endpoint's live state, copied on the event loop."""

    stable: Deployment | None
    running: dict[str, Deployment]
    replicas: dict[str, list[ReplicaStatus]]  # by revision label
    routed: dict[str, int]  # replicas in the published routing snapshot, by revision label
    shares: dict[str, float]
    autoscaling: dict[str, Any] | None = None  # the autoscaler's {replicas, desired, reason}


def live_endpoint(plane: ControlPlane, name: str) -> LiveEndpoint:
    """Copy the endpoint's live state; safe to call from any thread."""

    def read() -> LiveEndpoint:
        running = plane.running(name)
        return LiveEndpoint(
            stable=plane.stable(name),
            running=running,
            replicas={
                label: plane.backend.status(deployment.spec.group)
                for label, deployment in running.items()
            },
            routed={
                label: len(plane.backend.ready(deployment.spec.group))
                for label, deployment in running.items()
            },
            shares=plane.traffic_shares(name),
            autoscaling=plane.autoscaling(name),
        )

    return plane.on_loop(read)


def endpoint_public(plane: ControlPlane, row: EndpointRow) -> EndpointPublic:
    live = live_endpoint(plane, row.name)
    stable = live.stable
    replicas = live.replicas.get(stable.label, []) if stable else []
    # Ready means every running revision is: during a rollout the new one answers too. Ready
    # replicas are counted as the gateway routes them (the published snapshot), so an
    # endpoint said to be ready answers its next request.
    every = [replica for statuses in live.replicas.values() for replica in statuses]
    ready = sum(live.routed.values())
    if stable is not None and stable.remote is not None:
        status = EndpointStatus.READY  # an external server: no replicas of ours
    elif ready and ready >= len(every):
        status = EndpointStatus.READY
    elif ready:
        status = EndpointStatus.DEGRADED
    elif any(r.restarts >= FAILED_AFTER_RESTARTS for r in every):
        status = EndpointStatus.FAILED
    else:
        status = EndpointStatus.PENDING
    rollout = next((r.state for r in row.rollouts if RolloutState(r.state).active), None)
    return EndpointPublic(
        name=row.name,
        model_ref=row.model_ref,
        model=row.version.model.name,
        version=row.version.version,
        runtime=row.version.runtime,
        replicas=row.replicas,
        batching=row.batching,
        status=status,
        replica_status=replicas,
        url=f"/v2/models/{row.name}",
        created_at=row.created_at,
        stable_revision=f"r{row.stable_revision}",
        revisions=[r for r in revisions_public(plane, row, live) if r.running],
        rollout=rollout,
        intent=row.intent,
        autoscaling=live.autoscaling,
        outcome=(row.intent or {}).get("outcome"),
    )


def revisions_public(
    plane: ControlPlane, row: EndpointRow, live: LiveEndpoint | None = None
) -> list[RevisionPublic]:
    """Every revision of an endpoint; the running ones with their share of traffic."""
    live = live if live is not None else live_endpoint(plane, row.name)
    public = []
    for revision in row.revisions:
        running = revision.label in live.running
        public.append(
            RevisionPublic(
                name=revision.label,
                model=revision.version.model.name,
                version=revision.version.version,
                runtime=revision.version.runtime,
                runtime_options=revision.runtime_options,
                replicas=revision.replicas,
                batching=revision.batching,
                created_by=revision.created_by,
                created_at=revision.created_at,
                running=running,
                traffic_percent=live.shares.get(revision.label, 0.0),
                replica_status=live.replicas.get(revision.label, []) if running else [],
            )
        )
    return public
