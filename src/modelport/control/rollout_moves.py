"""Moving a rollout: each transition written to the database and made in traffic, in the
order that keeps the two consistent.

The controller decides (its tick, or a person through the API) and calls one of these moves
under the endpoint's lock. Every move completes or is undone. A decision is written to the
database before the traffic changes (promote, step), or right after it (rollback: traffic
first); a rollback whose write fails stays tracked and its write is retried, so the stored
rollout never stays active with nobody driving it.

A promotion the controller makes by itself is checked against the policies first (stage
``promote``): one waiting for a second person's approval, or refused by a policy, pauses the
rollout at its last step with the reason instead of rolling it back (control/approvals.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from modelport.control import approvals
from modelport.control import endpoints as endpoint_service
from modelport.control import rollouts as rollout_service
from modelport.control.concurrency import in_session
from modelport.control.plane import ControlPlane
from modelport.control.rollout_run import RolloutRun
from modelport.core.enums import RolloutState
from modelport.core.errors import Conflict, NotFound
from modelport.governance.identity import SYSTEM
from modelport.observability.windows import RevisionWindows

__all__ = ["RolloutMoves"]

log = logging.getLogger("modelport.rollouts")

T = TypeVar("T")


class RolloutMoves:
    """The moves of the rollouts in ``runs`` (the controller's own dict: a rollout that is
    promoted or whose rollback is recorded leaves it here)."""

    def __init__(
        self, plane: ControlPlane, windows: RevisionWindows, runs: dict[str, RolloutRun]
    ) -> None:
        self.plane = plane
        self.windows = windows
        self.runs = runs

    async def enter_step(self, run: RolloutRun, step: int, why: str, data: dict[str, Any]) -> None:
        """Move the rollout to ``step``: its traffic, and a fresh window to judge it by."""
        what = (
            f"mirroring {run.plan['shadow_sample']:.0%} of traffic to {run.target}"
            if run.strategy == "shadow"
            else f"{run.target} takes {run.weight(step):g}% of traffic"
        )
        # Written first: if the write fails, traffic stays on the step the database records.
        await self.transition(
            run,
            RolloutState.PROGRESSING,
            "step",
            f"{why}; step {step + 1} of {len(run.steps)}: {what}",
            data,
            step=step,
        )
        run.step = step
        self.restart_clock(run)
        self.apply_step(run)

    def apply_step(self, run: RolloutRun) -> None:
        """Give the new revision the traffic of the rollout's step: its weight, or its shadow."""
        if run.strategy == "shadow":
            self.plane.set_traffic(run.endpoint, shadow_sample=run.plan["shadow_sample"])
        else:
            self.plane.set_traffic(run.endpoint, weight=run.weight())

    async def promote_if_allowed(self, run: RolloutRun, why: str, data: dict[str, Any]) -> None:
        """An automatic promotion, if the policies allow it now; otherwise the rollout pauses
        where it is, saying why (it is not rolled back for waiting)."""
        policies = self.plane.policies
        verdict = await self._db(
            lambda s: approvals.promotion_verdict(
                policies, s, run.rollout_id, SYSTEM, enforce=False
            )
        )
        blocking = verdict.denials or verdict.approvals
        if not blocking:
            await self.promote(run, why, data)
            return
        why = await self._db(lambda s: approvals.pause_for(s, run.rollout_id, blocking, why, data))
        run.state = RolloutState.PAUSED
        log.info("rollout of %s: %s", run.endpoint, why)

    async def promote(self, run: RolloutRun, why: str, data: dict[str, Any]) -> None:
        """Make the new revision stable: written first, then all traffic switched to it."""

        def write(session: Session) -> None:
            rollout = rollout_service.get_rollout(session, run.rollout_id)
            row = rollout.endpoint
            target = endpoint_service.get_revision(session, row, rollout.to_revision)
            endpoint_service.set_stable(row, target)
            rollout_service.transition(
                session, rollout, RolloutState.PROMOTED, event="promoted", message=why, data=data
            )

        await self._db(write)
        self.runs.pop(run.endpoint, None)
        keep = run.plan["keep_previous_s"] if run.strategy == "blue-green" else 0.0
        await self.plane.switch(run.endpoint, run.target, keep_previous_s=keep)
        log.info("rollout of %s: %s", run.endpoint, why)

    async def roll_back(
        self, run: RolloutRun, state: RolloutState, why: str, data: dict[str, Any]
    ) -> None:
        """Return all traffic to the stable revision, then record the rollback."""
        # Traffic first: the old revision takes everything back before anything is written.
        await self.plane.drop_candidate(run.endpoint)
        event = "rolled_back" if state == RolloutState.ROLLED_BACK else "aborted"
        run.unsettled = (state, event, why, data)
        await self.settle(run)

    async def settle(self, run: RolloutRun) -> None:
        """Record a rollback done in traffic; while the write fails, the run stays tracked
        (the next tick or rollback retries) so the stored rollout is never left active."""
        assert run.unsettled is not None
        state, event, why, data = run.unsettled
        # Already final in the database, or deleted with its endpoint: nothing to record.
        with contextlib.suppress(Conflict, NotFound):
            await self.transition(run, state, event, why, data)
        run.unsettled = None
        if self.runs.get(run.endpoint) is run:
            del self.runs[run.endpoint]
        log.warning("rollout of %s: %s", run.endpoint, why)

    async def transition(
        self,
        run: RolloutRun,
        state: RolloutState,
        event: str,
        message: str,
        data: dict[str, Any] | None = None,
        *,
        step: int | None = None,
    ) -> None:
        """Write the move, then make it: a failed write leaves the run as it was."""
        await self._db(
            lambda s: rollout_service.transition(
                s,
                rollout_service.get_rollout(s, run.rollout_id),
                state,
                event=event,
                message=message,
                data=data,
                step=step,
            )
        )
        run.state = state

    async def event(self, run: RolloutRun, kind: str, message: str) -> None:
        """Add an event to the rollout's history without moving it."""
        await self._db(
            lambda s: rollout_service.add_event(
                s, rollout_service.get_rollout(s, run.rollout_id), kind, message
            )
        )

    def restart_clock(self, run: RolloutRun) -> None:
        """Start the step's window (and its wait) again from now."""
        run.mark = self.windows.now()
        run.started = time.monotonic()

    async def _db(self, work: Callable[[Session], T]) -> T:
        return await in_session(self.plane.db, work)
