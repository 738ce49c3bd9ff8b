"""The rollout controller: drives every rollout in progress through its steps.

Once per tick it looks at each rollout's new revision: starting (wait, or roll back if it
cannot start), on a step (judge the step's window against the SLO: next step, promote, or roll
back). Manual operations (apply, promote, rollback, ...) go through the same methods under the
endpoint's lock, so a person and the controller never move one rollout at the same time, while
different endpoints never wait on each other. No lock is held while a replica starts: undoing
a promotion waits for the old revision outside the lock, marked so that nothing else moves the
endpoint meanwhile.

The controller decides; control/rollout_moves.py makes each decision happen (written and made
in traffic, in the order that keeps the two consistent), including the policy check of an
automatic promotion. ``approve`` records an approval by someone other than the rollout's
starter, and promotes a rollout that was waiting for it (control/approvals.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from modelport.control import apply as apply_service
from modelport.control import approvals
from modelport.control import endpoints as endpoint_service
from modelport.control import rollouts as rollout_service
from modelport.control.analysis import Gates, Verdict, both, judge
from modelport.control.concurrency import EndpointLocks, in_session
from modelport.control.drift import DriftService
from modelport.control.plane import ControlPlane, Deployment
from modelport.control.rollout_audit import Position, move_of, position, record_move
from modelport.control.rollout_moves import RolloutMoves
from modelport.control.rollout_run import RolloutRun
from modelport.control.schemas import ApplyResult, RolloutPublic
from modelport.control.traffic import consumers_of
from modelport.control.undo import PromotionUndo
from modelport.core.enums import RolloutState
from modelport.core.errors import Conflict, Unavailable
from modelport.core.intent import Intent
from modelport.governance.identity import Actor
from modelport.observability.live_metrics import RolloutProgress
from modelport.observability.shadow import ShadowReports
from modelport.observability.windows import RevisionWindows
from modelport.store.tables import RolloutRow

__all__ = ["RolloutController", "RolloutRun"]

log = logging.getLogger("modelport.rollouts")

T = TypeVar("T")


class RolloutController:
    def __init__(
        self,
        plane: ControlPlane,
        windows: RevisionWindows,
        shadows: ShadowReports,
        *,
        tick_s: float = 0.5,
        start_timeout_s: float = 300.0,
        drift: DriftService | None = None,
    ) -> None:
        self.plane = plane
        self.windows = windows
        self.shadows = shadows
        self.drift = drift  # the output-drift gate's evidence, when drift monitoring runs
        self._tick_s = tick_s
        self._start_timeout_s = start_timeout_s
        self._runs: dict[str, RolloutRun] = {}
        self._moves = RolloutMoves(plane, windows, self._runs)  # shares the dict of runs
        self._lock = EndpointLocks()
        self._undo = PromotionUndo(plane, self._lock, start_timeout_s)
        self._undoing = self._undo.undoing  # the same dict: endpoint -> label it rolls back to
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resume every rollout that was in progress when the server stopped."""
        runs = await self._db(lambda s: [self.run_of(r) for r in rollout_service.list_active(s)])
        serving = self.plane.serving_names()
        for run in runs:
            self._runs[run.endpoint] = run
            if run.state != RolloutState.PENDING and run.endpoint in serving:
                self._moves.apply_step(run)  # the traffic it had: the step's weight, or its shadow
                await self._moves.event(
                    run,
                    "resumed",
                    f"server restarted: {run.state} at step {run.step + 1} of {len(run.steps)}; "
                    "the step's window starts again",
                )
                await self._audit_move(run, None, "resume")
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
        if self.drift is not None:
            self.drift.forget(run.endpoint, run.target)

    def forget(self, endpoint: str) -> None:
        self._runs.pop(endpoint, None)
        self._undoing.pop(endpoint, None)
        self.windows.forget(endpoint)
        self.shadows.forget(endpoint)
        if self.drift is not None:
            self.drift.forget(endpoint)

    async def delete(self, endpoint: str) -> None:
        """Stop an endpoint whose rows are gone: its rollout, its revisions, its windows."""
        async with self._lock(endpoint):
            self.forget(endpoint)
        await self.plane.undeploy(endpoint)

    # -- apply --------------------------------------------------------------------------------

    async def apply(self, intent: Intent, *, dry_run: bool, actor: Actor) -> ApplyResult:
        """Apply an intent file; with ``dry_run``, say what would change.

        After the commit, the endpoint is created and served, or a new revision is started
        and its rollout tracked. If that fails, the commit is undone: a created endpoint is
        deleted again, a rollout is marked rolled back with the reason."""
        if dry_run:
            result, _, _ = await self._db(lambda s: self._applied(s, intent, dry_run, actor))
            return result
        name = intent.endpoint
        async with self._lock(name):
            self._undo.check(name)
            result, deployment, run = await self._db(
                lambda s: self._applied(s, intent, dry_run, actor)
            )
            if result.action == "created":
                assert deployment is not None
                try:
                    await self.plane.serve(
                        name, deployment, routing=intent.routing, consumers=consumers_of(intent)
                    )
                except Exception as exc:
                    await self._db(lambda s: endpoint_service.delete_endpoint(s, name))
                    raise Unavailable(
                        f"endpoint '{name}' could not be started ({exc}); it was not created"
                    ) from exc
            elif result.action == "rollout":
                assert deployment is not None and run is not None
                self.track(run)
                try:
                    await self.plane.run_revision(name, deployment)
                except Exception as exc:
                    why = f"revision {run.target} could not start: {exc}"
                    await self._moves.roll_back(run, RolloutState.ROLLED_BACK, why, {})
                    raise Unavailable(f"{why}; the rollout was rolled back") from exc
                self.plane.set_traffic(name, routing=intent.routing, consumers=consumers_of(intent))
            elif result.action == "updated":
                self.plane.set_traffic(name, routing=intent.routing, consumers=consumers_of(intent))
        return result

    def _applied(
        self, session: Session, intent: Intent, dry_run: bool, actor: Actor
    ) -> tuple[ApplyResult, Deployment | None, RolloutRun | None]:
        applied = apply_service.apply_intent(
            session, intent, dry_run=dry_run, actor=actor, policies=self.plane.policies
        )
        deployment = run = None
        if applied.revision is not None and applied.endpoint is not None:
            # Raises (and so rolls every row back) if the revision could not run.
            deployment = self.plane.prepare(applied.endpoint, applied.revision)
        if applied.rollout is not None:
            run = self.run_of(applied.rollout)
        rollout = applied.rollout
        result = ApplyResult(
            endpoint=intent.endpoint,
            action=applied.action,
            dry_run=dry_run,
            changes=applied.changes,
            revision=f"r{applied.revision_number}" if applied.revision_number else None,
            rollout=self.public(session, rollout) if rollout is not None else None,
            summary=("dry run: would " if dry_run else "") + applied.summary,
        )
        return result, deployment, run

    def live(self, endpoint: str) -> dict[str, Any]:
        """What a rollout in progress looks like right now: traffic, windows, shadow report.
        Call on the event loop (``public`` does)."""
        run = self._runs.get(endpoint)
        if run is None:
            return {}
        since = run.mark if run.state != RolloutState.PENDING else None
        view: dict[str, Any] = {
            "traffic_percent": run.weight() if run.state != RolloutState.PENDING else 0,
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

    def progress(self) -> list[RolloutProgress]:
        """Every rollout in progress, as metrics show it. Call on the event loop."""
        return [
            RolloutProgress(
                endpoint=run.endpoint,
                revision=run.target,
                state=run.state.value,
                step=run.step + 1 if run.state != RolloutState.PENDING else 0,
                steps=len(run.steps),
                traffic_ratio=(run.weight() / 100 if run.state != RolloutState.PENDING else 0.0),
            )
            for run in self._runs.values()
            if run.state.active
        ]

    # -- manual control -----------------------------------------------------------------------

    async def pause(self, endpoint: str, *, actor: str) -> None:
        async with self._lock(endpoint):
            run = self._require(endpoint, RolloutState.PROGRESSING, "pause")
            await self._moves.transition(
                run, RolloutState.PAUSED, "paused", f"paused by {actor}: traffic stays as it is"
            )

    async def resume(self, endpoint: str, *, actor: str) -> None:
        async with self._lock(endpoint):
            run = self._require(endpoint, RolloutState.PAUSED, "resume")
            target = RolloutState.PENDING if run.step < 0 else RolloutState.PROGRESSING
            await self._moves.transition(
                run, target, "resumed", f"resumed by {actor}: the step's window starts again"
            )
            self._moves.restart_clock(run)

    async def promote(self, endpoint: str, *, actor: Actor) -> None:
        """Promote now, if the policies allow it: a denial, or an approval still missing
        (four-eyes), is a 403 naming the rule."""
        async with self._lock(endpoint):
            run = self._require(endpoint, None, "promote")
            await self._db(
                lambda s: approvals.promotion_verdict(
                    self.plane.policies, s, run.rollout_id, actor, enforce=True
                )
            )
            ready, failure = self.plane.revision_health(endpoint, run.target)
            if not ready:
                raise Conflict(
                    f"revision {run.target} of '{endpoint}' is not ready yet"
                    + (f" ({failure})" if failure else "")
                    + ": wait for it, or roll back",
                    state=run.state.value,
                )
            await self._moves.promote(run, f"promoted by {actor.name}", {})

    async def approve(self, endpoint: str, *, actor: Actor) -> None:
        """Approve the promotion of the endpoint's rollout as a second person (not its
        starter: 403); a rollout paused waiting for this approval is promoted at once."""
        async with self._lock(endpoint):
            run = self._require(endpoint, None, "approve")
            waiting = await self._db(
                lambda s: approvals.record_approval(self.plane.policies, s, run.rollout_id, actor)
            )
            if waiting:
                await self._moves.promote_if_allowed(run, f"promotion approved by {actor.name}", {})

    async def rollback(self, endpoint: str, *, actor: str, abort: bool = False) -> None:
        """Return all traffic to the stable revision. With no rollout in progress, undo the
        last promoted one: its previous revision becomes stable again."""
        async with self._lock(endpoint):
            self._undo.check(endpoint)
            run = self._runs.get(endpoint)
            if run is not None and run.unsettled is not None:
                await self._moves.settle(run)  # rolled back in traffic already: record it
                return
            if run is not None:
                state = RolloutState.ABORTED if abort else RolloutState.ROLLED_BACK
                verb = "aborted" if abort else "rolled back"
                await self._moves.roll_back(run, state, f"{verb} by {actor}", {})
                return
            if abort:
                self._require(endpoint, None, "abort")
            undo = await self._undo.begin(endpoint, actor)
        if undo is not None:
            await self._undo.finish(endpoint, actor, *undo)

    def _require(self, endpoint: str, state: RolloutState | None, action: str) -> RolloutRun:
        self._undo.check(endpoint)
        run = self._runs.get(endpoint)
        if run is None:
            raise Conflict(
                f"endpoint '{endpoint}' has no rollout in progress to {action}",
                state="none",
            )
        if run.unsettled is not None:
            raise Conflict(
                f"the rollout of '{endpoint}' was {run.unsettled[0]} and is being recorded: "
                "retry in a moment",
                state=run.unsettled[0].value,
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
            await self.tick()

    async def tick(self) -> None:
        """Advance every rollout once. An endpoint that a person (or an undo) is moving right
        now is skipped until the next tick; the others never wait for it."""
        for endpoint in list(self._runs):
            lock = self._lock(endpoint)
            if lock.locked():
                continue
            try:
                async with lock:
                    run = self._runs.get(endpoint)
                    if run is not None:
                        before = position(run, tracked=True)
                        await self._advance(run)
                        await self._audit_move(run, before)
            except Exception:  # one bad rollout must not stop the others
                log.exception("rollout of %s: tick failed", endpoint)

    async def _audit_move(
        self, run: RolloutRun, before: Position | None, action: str | None = None
    ) -> None:
        """Record a move this tick made by itself in the audit log, as ``system`` (people's
        moves are recorded by the API routes, with their actor)."""
        after = position(run, tracked=self._runs.get(run.endpoint) is run)
        action = action or (move_of(before, after) if before is not None else None)
        if action is not None:
            await asyncio.to_thread(
                record_move, self.plane.audit, self.plane.db, run, action, before, after
            )

    async def _advance(self, run: RolloutRun) -> None:
        if run.unsettled is not None:
            await self._moves.settle(run)
        elif run.state == RolloutState.PENDING:
            await self._warm_up(run)
        elif run.state == RolloutState.PROGRESSING:
            await self._judge(run)

    async def _warm_up(self, run: RolloutRun) -> None:
        ready, failure = self.plane.revision_health(run.endpoint, run.target)
        waited = time.monotonic() - run.started
        if failure is None and not ready and waited > self._start_timeout_s:
            failure = f"not ready after {waited:.0f} s"
        if failure is not None:
            await self._moves.roll_back(
                run,
                RolloutState.ROLLED_BACK,
                f"revision {run.target} could not start: {failure}",
                {},
            )
        elif ready and run.strategy == "immediate":
            await self._moves.promote_if_allowed(
                run, f"{run.target} is ready: switched all traffic", {}
            )
        elif ready:
            await self._moves.enter_step(run, 0, f"{run.target} is ready", {})

    async def _judge(self, run: RolloutRun) -> None:
        stats = self.windows.stats(run.endpoint, run.target, run.mark)
        verdict = judge(stats, Gates.of(run.plan), time.monotonic() - run.started)
        data = {"window": stats.to_dict(), "step": run.step, "traffic_percent": run.weight()}
        if run.strategy == "shadow":
            data["shadow"] = self.shadows.report(run.endpoint, run.target)
        if verdict.decision == "fail":
            verdict = Verdict("fail", f"SLO breached: {verdict.reason}")
        verdict = both(verdict, self._output_drift(run, data))
        if verdict.decision == "fail":
            await self._moves.roll_back(run, RolloutState.ROLLED_BACK, verdict.reason, data)
        elif verdict.decision == "pass":
            if run.step + 1 < len(run.steps):
                await self._moves.enter_step(
                    run, run.step + 1, f"step passed: {verdict.reason}", data
                )
            elif run.strategy == "shadow":
                await self._moves.transition(
                    run,
                    RolloutState.PAUSED,
                    "analysis",
                    f"shadow passed: {verdict.reason}; promote to switch traffic, or abort",
                    data,
                )
            else:
                await self._moves.promote_if_allowed(
                    run, f"last step passed: {verdict.reason}", data
                )

    def _output_drift(self, run: RolloutRun, data: dict[str, Any]) -> Verdict | None:
        """The rollout's output-drift gate, if it has one (not for shadow rollouts, whose
        candidate answers nobody): drift fails the step, too few sampled outputs hold it."""
        gate = run.plan.get("output_drift")
        if not gate or run.strategy == "shadow":
            return None
        if self.drift is None:
            return Verdict("wait", "output drift: drift monitoring is not running")
        drift = self.drift.canary(run.endpoint, run.source, run.target, gate)
        data["output_drift"] = drift.data
        return Verdict(drift.decision, drift.reason)

    def run_of(self, rollout: RolloutRow) -> RolloutRun:
        """The controller's record of a stored rollout (call inside the rollout's session),
        its step's clock started now."""
        run = RolloutRun.of(rollout)
        self._moves.restart_clock(run)
        return run

    async def _db(self, work: Callable[[Session], T]) -> T:
        return await in_session(self.plane.db, work)

    def public(self, session: Session, rollout: RolloutRow) -> RolloutPublic:
        """A stored rollout with its live view; called from route threads, so the live part
        (windows, shadow report, the run) is read on the event loop."""
        name = rollout.endpoint.name
        live = (
            self.plane.on_loop(lambda: self.live(name))
            if rollout.state in rollout_service.ACTIVE
            else {}
        )
        return rollout_service.rollout_public(rollout, live)
