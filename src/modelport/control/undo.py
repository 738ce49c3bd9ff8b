"""Undoing a promotion: the last promoted rollout's previous revision becomes stable again.

If that revision still runs (kept warm after a blue-green switch), traffic switches at once.
Otherwise it is started first, and the endpoint is marked as undoing meanwhile so that nothing
else moves it; the start is awaited outside the endpoint's lock, so that the rollout
controller and the other endpoints never wait on a replica starting.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.orm import Session

from modelport.control import endpoints as endpoint_service
from modelport.control import rollouts as rollout_service
from modelport.control.concurrency import EndpointLocks, in_session
from modelport.control.plane import ControlPlane, Deployment
from modelport.core.enums import RolloutState
from modelport.core.errors import Conflict

__all__ = ["PromotionUndo"]


class PromotionUndo:
    """The undos in progress, by endpoint; shares the rollout controller's endpoint locks."""

    def __init__(self, plane: ControlPlane, locks: EndpointLocks, start_timeout_s: float) -> None:
        self.plane = plane
        self._lock = locks
        self._start_timeout_s = start_timeout_s
        self.undoing: dict[str, str] = {}  # endpoint -> revision label it is rolling back to

    def check(self, endpoint: str) -> None:
        """Refuse to move an endpoint while it waits for the revision it rolls back to."""
        label = self.undoing.get(endpoint)
        if label is not None:
            raise Conflict(
                f"endpoint '{endpoint}' is rolling back to {label} (waiting for it to start): "
                "retry once it serves",
                state="rolling_back",
            )

    async def begin(self, endpoint: str, actor: str) -> tuple[int, str] | None:
        """Under the endpoint's lock: find the promotion to undo and make its source revision
        run. Returns (rollout id, label) when the revision has to start first, after switching
        at once (and returning None) when it still runs."""

        def load(session: Session) -> tuple[int, Deployment]:
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
            return rollout.id, self.plane.prepare(row, source)

        rollout_id, deployment = await in_session(self.plane.db, load)
        if deployment.label in self.plane.running(endpoint):  # kept warm: switch now
            await self._write(rollout_id, actor)
            await self.plane.switch(endpoint, deployment.label)
            return None
        await self.plane.run_revision(endpoint, deployment)
        self.undoing[endpoint] = deployment.label
        return rollout_id, deployment.label

    async def finish(self, endpoint: str, actor: str, rollout_id: int, label: str) -> None:
        """Wait (holding no lock) for the revision to be ready, then switch to it under the
        lock; if it cannot start, or anything fails, stop it and leave the endpoint as it
        was."""
        try:
            failure = await self._wait_ready(endpoint, label)
            async with self._lock(endpoint):
                if self.undoing.get(endpoint) != label:  # deleted meanwhile
                    raise Conflict(f"endpoint '{endpoint}' changed while rolling back: check it")
                if failure is not None:
                    raise Conflict(
                        f"revision {label} could not start ({failure}): "
                        f"'{endpoint}' still serves what it served"
                    )
                await self._write(rollout_id, actor)
                del self.undoing[endpoint]
                await self.plane.switch(endpoint, label)
        finally:
            if self.undoing.get(endpoint) == label:  # not switched: undo the start
                del self.undoing[endpoint]
                await self.plane.drop_candidate(endpoint)

    async def _wait_ready(self, endpoint: str, label: str) -> str | None:
        """None once the revision is ready; otherwise why it will not be."""
        deadline = time.monotonic() + self._start_timeout_s
        while self.undoing.get(endpoint) == label:
            ready, failure = self.plane.revision_health(endpoint, label)
            if ready or failure is not None:
                return failure
            if time.monotonic() > deadline:
                return f"not ready after {self._start_timeout_s:g} s"
            await asyncio.sleep(0.1)
        return None

    async def _write(self, rollout_id: int, actor: str) -> None:
        def write(session: Session) -> None:
            current = rollout_service.get_rollout(session, rollout_id)
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

        await in_session(self.plane.db, write)
