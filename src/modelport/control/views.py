"""What the API shows of endpoints and revisions: stored rows joined with the live state of
the plane (which revisions run, their replicas, their share of traffic)."""

from __future__ import annotations

from modelport.control.plane import FAILED_AFTER_RESTARTS, ControlPlane
from modelport.control.schemas import EndpointPublic, RevisionPublic
from modelport.core.enums import EndpointStatus, ReplicaState, RolloutState
from modelport.store.tables import EndpointRow

__all__ = ["endpoint_public", "revisions_public"]


def endpoint_public(plane: ControlPlane, row: EndpointRow) -> EndpointPublic:
    stable = plane.stable(row.name)
    replicas = plane.backend.status(stable.spec.group) if stable else []
    # Ready means every running revision is: during a rollout the new one answers too.
    every = [
        replica
        for deployment in plane.running(row.name).values()
        for replica in plane.backend.status(deployment.spec.group)
    ]
    ready = sum(r.state == ReplicaState.READY for r in every)
    if stable is not None and stable.remote is not None:
        status = EndpointStatus.READY  # an external server: no replicas of ours
    elif ready and ready == len(every):
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
        revisions=[r for r in revisions_public(plane, row) if r.running],
        rollout=rollout,
        intent=row.intent,
    )


def revisions_public(plane: ControlPlane, row: EndpointRow) -> list[RevisionPublic]:
    """Every revision of an endpoint; the running ones with their share of traffic."""
    running = plane.running(row.name)
    shares = plane.traffic_shares(row.name)
    public = []
    for revision in row.revisions:
        deployment = running.get(revision.label)
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
                running=deployment is not None,
                traffic_percent=shares.get(revision.label, 0.0),
                replica_status=plane.backend.status(deployment.spec.group) if deployment else [],
            )
        )
    return public
