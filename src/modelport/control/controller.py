"""The rollout controller: drives every rollout in progress through its steps.

Once per tick it looks at each rollout's new revision: starting (wait, or roll back if it
cannot start), on a step (judge the step's window against the SLO: next step, promote, or roll
back). Manual operations go through the same methods, under the same lock, so a person and the
controller never move one rollout at the same time. Every decision is written to the database
before (promote) or right after (rollback: traffic first) the traffic changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from modelport.control import endpoints as endpoint_service
from modelport.control import rollouts as rollout_service
from modelport.control.analysis import Gates, judge
from modelport.control.plane import ControlPlane
from modelport.control.schemas import RolloutPublic
from modelport.core.enums import RolloutState
from modelport.core.errors import Conflict
from modelport.observability.shadow import ShadowReports
from modelport.observability.windows import RevisionWindows
from modelport.store.tables import RolloutRow

__all__ = ["RolloutController", "RolloutRun"]

log = logging.getLogger("modelport.rollouts")

T = TypeVar("T")


@dataclass(slots=True)
class RolloutRun:
    """A rollout in progress, as the controller tracks it between ticks."""

    rollout_id: int
    endpoint: str
    source: str  # the stable revision's label
    target: str  # the new revision's label
    plan: dict[str, Any]
    state: RolloutState
    step: int
    mark: float = 0.0  # windows clock when the step began: its window starts here
    started: float = field(default_factory=time.monotonic)  # when the step (or warm-up) began

    @property
    def strategy(self) -> str:
        return str(self.plan["strategy"])

    @property
    def steps(self) -> list[int]:
        if self.strategy == "canary":
            return list(self.plan["steps"])
        return [100] if self.strategy == "blue-green" else [0]


class RolloutController:
    def __init__(
        self,
        plane: ControlPlane,
        windows: RevisionWindows,
        shadows: ShadowReports,
        *,
        tick_s: float = 0.5,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.plane = plane
        self.windows = windows
        self.shadows = shadows
        self._tick_s = tick_s
        self._start_timeout_s = start_timeout_s
        self._runs: dict[str, RolloutRun] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resume every rollout that was in progress when the server stopped."""
        runs = await self._db(lambda s: [self.run_of(r) for r in rollout_service.list_active(s)])
        serving = self.plane.serving_names()
        for run in runs:
            self._runs[run.endpoint] = run
            if run.state != RolloutState.PENDING and run.endpoint in serving:
                self._apply_step(run)  # the traffic it had: the step's weight, or its shadow
                await self._event(
                    run,
                    "resumed",
                    f"server restarted: {run.state} at step {run.step + 1} of {len(run.steps)}; "
                    "the step's window starts again",
                )
        self._task = asyncio.create_task(self._loop(), name="modelport-rollouts")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def track(self, run: RolloutRun) -> None:
        """Take on a rollout just created (its new revision is starting)."""
        self._runs[run.endpoint] = run
        self.windows.forget(run.endpoint, run.target)
        self.shadows.forget(run.endpoint, run.target)

    def forget(self, endpoint: str) -> None:
        self._runs.pop(endpoint, None)
        self.windows.forget(endpoint)
        self.shadows.forget(endpoint)

    def live(self, endpoint: str) -> dict[str, Any]:
        """What a rollout in progress looks like right now: traffic, windows, shadow report."""
        run = self._runs.get(endpoint)
        if run is None:
            return {}
        since = run.mark if run.state != RolloutState.PENDING else None
        view: dict[str, Any] = {
            "traffic_percent": self._weight(run) if run.state != RolloutState.PENDING else 0,
            "step_elapsed_s": round(time.monotonic() - run.started, 1),
            "window": {
                label: self.windows.stats(endpoint, label, since).to_dict()
                for label in (run.source, run.target)
            },
        }
        report = self.shadows.report(endpoint, run.target)
        if report is not None:
            view["shadow"] = report
        return view

    # -- manual control -----------------------------------------------------------------------

    async def pause(self, endpoint: str, *, actor: str) -> None:
        async with self._lock:
            run = self._require(endpoint, RolloutState.PROGRESSING, "pause")
            await self._transition(
                run, RolloutState.PAUSED, "paused", f"paused by {actor}: traffic stays as it is"
            )

    async def resume(self, endpoint: str, *, actor: str) -> None:
        async with self._lock:
            run = self._require(endpoint, RolloutState.PAUSED, "resume")
            target = RolloutState.PENDING if run.step < 0 else RolloutState.PROGRESSING
            self._restart_clock(run)
            await self._transition(
                run, target, "resumed", f"resumed by {actor}: the step's window starts again"
            )

    async def promote(self, endpoint: str, *, actor: str) -> None:
        async with self._lock:
            run = self._require(endpoint, None, "promote")
            ready, failure = self.plane.revision_health(endpoint, run.target)
            if not ready:
                raise Conflict(
                    f"revision {run.target} of '{endpoint}' is not ready yet"
                    + (f" ({failure})" if failure else "")
                    + ": wait for it, or roll back",
                    state=run.state.value,
                )
            await self._promote(run, f"promoted by {actor}", {})

    async def rollback(self, endpoint: str, *, actor: str, abort: bool = False) -> None:
        """Return all traffic to the stable revision. With no rollout in progress, undo the
        last promoted one: its previous revision becomes stable again."""
        async with self._lock:
            run = self._runs.get(endpoint)
            if run is None:
                if abort:
                    self._require(endpoint, None, "abort")
                await self._undo_promotion(endpoint, actor)
                return
            if abort:
                await self._roll_back(run, RolloutState.ABORTED, f"aborted by {actor}", {})
            else:
                await self._roll_back(run, RolloutState.ROLLED_BACK, f"rolled back by {actor}", {})

    def _require(self, endpoint: str, state: RolloutState | None, action: str) -> RolloutRun:
        run = self._runs.get(endpoint)
        if run is None:
            raise Conflict(
                f"endpoint '{endpoint}' has no rollout in progress to {action}",
                state="none",
            )
        if state is not None and run.state != state:
            raise Conflict(
                f"the rollout of '{endpoint}' is {run.state}: {action} needs a {state} rollout",
                state=run.state.value,
            )
        return run

    # -- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            for endpoint in list(self._runs):
                try:
                    async with self._lock:
                        run = self._runs.get(endpoint)
                        if run is not None:
                            await self._advance(run)
                except Exception:  # one bad rollout must not stop the others
                    log.exception("rollout of %s: tick failed", endpoint)

    async def _advance(self, run: RolloutRun) -> None:
        if run.state == RolloutState.PENDING:
            await self._warm_up(run)
        elif run.state == RolloutState.PROGRESSING:
            await self._judge(run)

    async def _warm_up(self, run: RolloutRun) -> None:
        ready, failure = self.plane.revision_health(run.endpoint, run.target)
        waited = time.monotonic() - run.started
        if failure is None and not ready and waited > self._start_timeout_s:
            failure = f"not ready after {waited:.0f} s"
        if failure is not None:
            await self._roll_back(
                run,
                RolloutState.ROLLED_BACK,
                f"revision {run.target} could not start: {failure}",
                {},
            )
        elif ready and run.strategy == "immediate":
            await self._promote(run, f"{run.target} is ready: switched all traffic", {})
        elif ready:
            await self._enter_step(run, 0, f"{run.target} is ready", {})

    async def _judge(self, run: RolloutRun) -> None:
        stats = self.windows.stats(run.endpoint, run.target, run.mark)
        verdict = judge(stats, Gates.of(run.plan), time.monotonic() - run.started)
        data = {"window": stats.to_dict(), "step": run.step, "traffic_percent": self._weight(run)}
        if run.strategy == "shadow":
            data["shadow"] = self.shadows.report(run.endpoint, run.target)
        if verdict.decision == "fail":
            await self._roll_back(
                run, RolloutState.ROLLED_BACK, f"SLO breached: {verdict.reason}", data
            )
        elif verdict.decision == "pass":
            if run.step + 1 < len(run.steps):
                await self._enter_step(run, run.step + 1, f"step passed: {verdict.reason}", data)
            elif run.strategy == "shadow":
                await self._transition(
                    run,
                    RolloutState.PAUSED,
                    "analysis",
                    f"shadow passed: {verdict.reason}; promote to switch traffic, or abort",
                    data,
                )
            else:
                await self._promote(run, f"last step passed: {verdict.reason}", data)

    # -- moves --------------------------------------------------------------------------------

    async def _enter_step(self, run: RolloutRun, step: int, why: str, data: dict[str, Any]) -> None:
        run.step = step
        self._restart_clock(run)
        self._apply_step(run)
        what = (
            f"mirroring {run.plan['shadow_sample']:.0%} of traffic to {run.target}"
            if run.strategy == "shadow"
            else f"{run.target} takes {self._weight(run):g}% of traffic"
        )
        await self._transition(
            run,
            RolloutState.PROGRESSING,
            "step",
            f"{why}; step {step + 1} of {len(run.steps)}: {what}",
            data,
            step=step,
        )

    def _apply_step(self, run: RolloutRun) -> None:
        if run.strategy == "shadow":
            self.plane.set_traffic(run.endpoint, shadow_sample=run.plan["shadow_sample"])
        else:
            self.plane.set_traffic(run.endpoint, weight=self._weight(run))

    def _weight(self, run: RolloutRun) -> float:
        if run.strategy == "shadow" or run.step < 0:
            return 0.0
        return float(run.steps[run.step])

    async def _promote(self, run: RolloutRun, why: str, data: dict[str, Any]) -> None:
        def write(session: Session) -> None:
            rollout = rollout_service.get_rollout(session, run.rollout_id)
            row = rollout.endpoint
            target = endpoint_service.get_revision(session, row, rollout.to_revision)
            endpoint_service.set_stable(row, target)
            rollout_service.transition(
                session, rollout, RolloutState.PROMOTED, event="promoted", message=why, data=data
            )

        await self._db(write)
        self._runs.pop(run.endpoint, None)
        keep = run.plan["keep_previous_s"] if run.strategy == "blue-green" else 0.0
        await self.plane.switch(run.endpoint, run.target, keep_previous_s=keep)
        log.info("rollout of %s: %s", run.endpoint, why)

    async def _roll_back(
        self, run: RolloutRun, state: RolloutState, why: str, data: dict[str, Any]
    ) -> None:
        # Traffic first: the old revision takes everything back before anything is written.
        self._runs.pop(run.endpoint, None)
        await self.plane.drop_candidate(run.endpoint)
        event = "rolled_back" if state == RolloutState.ROLLED_BACK else "aborted"
        await self._transition(run, state, event, why, data)
        log.warning("rollout of %s: %s", run.endpoint, why)

    async def _undo_promotion(self, endpoint: str, actor: str) -> None:
        """Roll back the last promoted rollout: its source revision serves again."""

        def load(session: Session) -> tuple[RolloutRow, Any]:
            row = endpoint_service.get_endpoint(session, endpoint)
            rollout = rollout_service.latest_rollout(session, row)
            if rollout.state != RolloutState.PROMOTED or rollout.to_revision != (
                row.stable_revision
            ):
                raise Conflict(
                    f"endpoint '{endpoint}' has no rollout in progress and its last rollout is "
                    f"{rollout.state}: nothing to roll back",
                    state=rollout.state,
                )
            source = endpoint_service.get_revision(session, row, rollout.from_revision)
            return rollout, self.plane.prepare(row, source)

        rollout, deployment = await self._db(load)
        running = self.plane.running(endpoint)
        if deployment.label not in running:  # not kept warm: start it before switching
            await self.plane.run_revision(endpoint, deployment)
            deadline = time.monotonic() + self._start_timeout_s
            while not self.plane.revision_health(endpoint, deployment.label)[0]:
                if time.monotonic() > deadline:
                    await self.plane.drop_candidate(endpoint)
                    raise Conflict(f"revision {deployment.label} did not become ready")
                await asyncio.sleep(0.1)
        await self.plane.switch(endpoint, deployment.label)

        def write(session: Session) -> None:
            current = rollout_service.get_rollout(session, rollout.id)
            row = current.endpoint
            source = endpoint_service.get_revision(session, row, current.from_revision)
            endpoint_service.set_stable(row, source)
            current.state = RolloutState.ROLLED_BACK
            current.reason = f"rolled back after promotion by {actor}"
            rollout_service.add_event(
                session,
                current,
                "rolled_back",
                f"rolled back by {actor} after promotion: r{current.from_revision} serves again",
            )

        await self._db(write)

    async def _transition(
        self,
        run: RolloutRun,
        state: RolloutState,
        event: str,
        message: str,
        data: dict[str, Any] | None = None,
        *,
        step: int | None = None,
    ) -> None:
        run.state = state
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

    async def _event(self, run: RolloutRun, kind: str, message: str) -> None:
        await self._db(
            lambda s: rollout_service.add_event(
                s, rollout_service.get_rollout(s, run.rollout_id), kind, message
            )
        )

    def _restart_clock(self, run: RolloutRun) -> None:
        run.mark = self.windows.now()
        run.started = time.monotonic()

    def run_of(self, rollout: RolloutRow) -> RolloutRun:
        """The controller's record of a stored rollout (call inside the rollout's session)."""
        run = RolloutRun(
            rollout_id=rollout.id,
            endpoint=rollout.endpoint.name,
            source=f"r{rollout.from_revision}",
            target=f"r{rollout.to_revision}",
            plan=rollout.plan,
            state=RolloutState(rollout.state),
            step=rollout.step,
        )
        self._restart_clock(run)
        return run

    async def _db(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.plane.db.session() as session:
                return work(session)

        return await asyncio.to_thread(run)

    def public(self, session: Session, rollout: RolloutRow) -> RolloutPublic:
        live = self.live(rollout.endpoint.name) if rollout.state in rollout_service.ACTIVE else {}
        return rollout_service.rollout_public(rollout, live)
