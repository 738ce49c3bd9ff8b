"""Recording the rollout controller's own moves in the audit log, as actor ``system``.

The controller's tick is the only thing that moves a rollout by itself (a step, a promotion, a
rollback, a pause for analysis or approval); people move rollouts through the API, whose
routes record them with their actor. So the controller takes the run's position before and
after each tick's advance, and a change between the two is an automatic move: one place that
sees every such move, however the controller's decisions are arranged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from modelport.control.audit import AuditLog
from modelport.control.rollout_run import RolloutRun
from modelport.core.enums import RolloutState
from modelport.governance.identity import SYSTEM
from modelport.store import Database
from modelport.store.tables import RolloutEventRow

__all__ = ["Position", "move_of", "position", "record_move"]

log = logging.getLogger("modelport.audit")

_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Position:
    """Where a rollout stands, as the controller tracks it."""

    state: RolloutState
    step: int
    tracked: bool  # still driven by the controller (not yet promoted or rolled back)
    unsettled: bool  # rolled back in traffic, its write still pending

    def view(self) -> dict[str, Any]:
        return {"state": self.state.value, "step": self.step}


def position(run: RolloutRun, tracked: bool) -> Position:
    return Position(run.state, run.step, tracked, run.unsettled is not None)


def move_of(before: Position, after: Position) -> str | None:
    """The move a tick made (``step``, ``promote``, ``rollback``, ``pause``), or None."""
    if before.unsettled:  # the rollback was recorded when it was made; now it is written
        return None
    if after.unsettled or after.state in (RolloutState.ROLLED_BACK, RolloutState.ABORTED):
        return "rollback"
    if after.state == RolloutState.PROMOTED or (not after.tracked and after.state.active):
        return "promote"  # a promoted run leaves the controller in the state it was in
    if after.state == RolloutState.PAUSED and before.state != RolloutState.PAUSED:
        return "pause"
    if after.state == RolloutState.PROGRESSING and (
        before.state != RolloutState.PROGRESSING or after.step != before.step
    ):
        return "step"
    return None


def record_move(
    audit: AuditLog,
    db: Database,
    run: RolloutRun,
    action: str,
    before: Position | None,
    after: Position,
) -> None:
    """Append an automatic move (blocking: call it in a thread), with the reason the
    controller wrote in the rollout's last event. A failed write is logged, not raised: the
    move is made, and a tick must not count as failed for its record."""
    try:
        with db.session() as session:
            event = session.scalars(
                select(RolloutEventRow)
                .where(RolloutEventRow.rollout_id == run.rollout_id)
                .order_by(RolloutEventRow.id.desc())
                .limit(1)
            ).first()
            kind, reason = (event.kind, event.message) if event is not None else ("", "")
        promoted = action == "promote"
        audit.record(
            actor=SYSTEM,
            action=f"rollouts.{action}",
            target=f"endpoint:{run.endpoint}",
            before=before.view() if before is not None else None,
            after={"state": "promoted", "step": after.step} if promoted else after.view(),
            details={
                "rollout": run.rollout_id,
                "revision": run.target,
                "event": kind,
                "reason": reason[:_REASON_CHARS],
            },
        )
    except Exception:
        log.exception(
            "audit entry not stored: system rollouts.%s of endpoint %s", action, run.endpoint
        )
