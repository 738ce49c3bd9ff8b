"""Rollout service: the persisted state machine of moving traffic between revisions.

The controller decides; this module writes what it decided (state, step, the event and the
numbers behind it), so that a restarted server picks a rollout up where it stood.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.schemas import RolloutEventPublic, RolloutPublic
from modelport.core.enums import RolloutState
from modelport.core.errors import Conflict, NotFound
from modelport.core.intent import Intent, Rollout
from modelport.store.tables import EndpointRow, RolloutEventRow, RolloutRow

__all__ = [
    "ACTIVE",
    "active_rollout",
    "add_event",
    "create_rollout",
    "get_rollout",
    "latest_rollout",
    "list_active",
    "plan_of",
    "rollout_public",
    "transition",
]

ACTIVE = (RolloutState.PENDING, RolloutState.PROGRESSING, RolloutState.PAUSED)

_DEFAULT_MAX_ERROR_RATE = 0.01


def plan_of(intent: Intent | None) -> dict[str, Any]:
    """What a rollout will do, fixed when it starts: strategy settings plus the SLO gates."""
    rollout = intent.rollout if intent is not None else Rollout()
    slo = intent.slo if intent is not None else None
    return {
        "strategy": rollout.strategy if intent is not None else "immediate",
        "steps": list(rollout.steps),
        "interval_s": rollout.interval_s,
        "min_requests": rollout.min_requests,
        "shadow_sample": rollout.shadow_sample,
        "keep_previous_s": rollout.keep_previous_s,
        "output_drift": (
            rollout.output_drift.model_dump() if rollout.output_drift is not None else None
        ),
        "max_error_rate": slo.max_error_rate if slo is not None else _DEFAULT_MAX_ERROR_RATE,
        "p95_latency_ms": slo.p95_latency_ms if slo is not None else None,
    }


def create_rollout(
    session: Session,
    row: EndpointRow,
    *,
    from_revision: int,
    to_revision: int,
    plan: dict[str, Any],
    created_by: str,
) -> RolloutRow:
    rollout = RolloutRow(
        endpoint=row,
        from_revision=from_revision,
        to_revision=to_revision,
        strategy=plan["strategy"],
        plan=plan,
        state=RolloutState.PENDING,
        step=-1,
        created_by=created_by,
    )
    session.add(rollout)
    session.flush()
    add_event(
        session,
        rollout,
        "created",
        f"r{from_revision} -> r{to_revision} by {plan['strategy']}; starting r{to_revision}",
    )
    return rollout


def get_rollout(session: Session, rollout_id: int) -> RolloutRow:
    rollout = session.get(RolloutRow, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id} does not exist")
    return rollout


def active_rollout(session: Session, row: EndpointRow) -> RolloutRow | None:
    return session.scalar(
        select(RolloutRow).where(RolloutRow.endpoint_id == row.id, RolloutRow.state.in_(ACTIVE))
    )


def latest_rollout(session: Session, row: EndpointRow) -> RolloutRow:
    rollout = session.scalar(
        select(RolloutRow).where(RolloutRow.endpoint_id == row.id).order_by(RolloutRow.id.desc())
    )
    if rollout is None:
        raise NotFound(
            f"endpoint '{row.name}' has had no rollout yet: apply a new model version with "
            "'modelport apply -f modelport.yaml' to start one"
        )
    return rollout


def list_active(session: Session) -> list[RolloutRow]:
    return list(session.scalars(select(RolloutRow).where(RolloutRow.state.in_(ACTIVE))))


def add_event(
    session: Session,
    rollout: RolloutRow,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(RolloutEventRow(rollout=rollout, kind=kind, message=message, data=data or {}))
    session.flush()


def transition(
    session: Session,
    rollout: RolloutRow,
    state: RolloutState,
    *,
    event: str,
    message: str,
    data: dict[str, Any] | None = None,
    step: int | None = None,
) -> None:
    """Move the state machine, refusing moves it does not allow, and record why."""
    current = RolloutState(rollout.state)
    if not current.active:
        raise Conflict(
            f"rollout {rollout.id} of endpoint '{rollout.endpoint.name}' is already "
            f"{current}: nothing to change",
            state=current.value,
        )
    rollout.state = state
    if step is not None:
        rollout.step = step
        rollout.step_started_at = datetime.now(UTC)
    if not state.active:
        rollout.finished_at = datetime.now(UTC)
        rollout.reason = message
    else:  # a reason for waiting (approvals.pause_for) holds only until the next move
        rollout.reason = ""
    add_event(session, rollout, event, message, data)


def rollout_public(rollout: RolloutRow, live: dict[str, Any] | None = None) -> RolloutPublic:
    plan = rollout.plan
    steps = plan.get("steps", [])
    return RolloutPublic(
        id=rollout.id,
        endpoint=rollout.endpoint.name,
        from_revision=f"r{rollout.from_revision}",
        to_revision=f"r{rollout.to_revision}",
        strategy=rollout.strategy,
        state=RolloutState(rollout.state),
        step=rollout.step,
        steps=steps,
        plan=plan,
        reason=rollout.reason,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        step_started_at=rollout.step_started_at,
        finished_at=rollout.finished_at,
        live=live or {},
        events=[
            RolloutEventPublic(at=e.at, kind=e.kind, message=e.message, data=e.data)
            for e in rollout.events
        ],
    )
