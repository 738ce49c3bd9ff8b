"""The autoscaler: keeps each endpoint's stable revision at the replica count its load needs.

Once a tick (1 s) it reads, for every endpoint whose intent lets its replicas vary
(``resources.replicas`` max above min, or min 0), the revision's load as the gateway sees it
(in memory: requests in flight and waiting, calls sent), asks that revision's ScaleDecider
(planning/autoscale.py: stabilisation windows, scale to zero) for a count, and has the backend
scale to it: new replicas start beside the running ones, surplus ones drain before they stop.
Each change is an audit entry by actor ``system`` (``endpoints.scale``), and the endpoint's
view shows ``autoscaling: {replicas, desired, reason}``.

A request to a revision scaled to zero calls ``wake`` (from the gateway, on the event loop),
which starts one replica at once; the request waits for it (gateway/waking.py).

Intents are read from the database every few ticks, off the event loop; nothing here touches
the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelport.control import endpoints as endpoint_service
from modelport.control.plane import ControlPlane
from modelport.core.intent import Intent, IntentAutoscaling
from modelport.governance.identity import SYSTEM
from modelport.planning.autoscale import ScaleDecider

__all__ = ["Autoscaler", "ScaleRange", "scale_range_of"]

log = logging.getLogger("modelport.autoscaler")

Load = Callable[[], dict[tuple[str, str], tuple[int, int]]]

_INTENTS_EVERY = 2  # ticks between reads of the stored intents


@dataclass(frozen=True, slots=True)
class ScaleRange:
    """What an intent says about scaling, as the decider takes it."""

    min: int
    max: int
    target_in_flight: float
    up_after_s: float
    down_after_s: float
    idle_to_zero_after_s: float

    def decider(self) -> ScaleDecider:
        return ScaleDecider(
            min=self.min,
            max=self.max,
            target_in_flight=self.target_in_flight,
            up_after_s=self.up_after_s,
            down_after_s=self.down_after_s,
            idle_to_zero_after_s=self.idle_to_zero_after_s,
        )


def scale_range_of(intent: Intent | None) -> ScaleRange | None:
    """The range an endpoint autoscales in, or None when its replica count is fixed."""
    if intent is None:
        return None
    replicas = intent.resources.replicas
    if replicas.max <= replicas.min and replicas.min > 0:
        return None
    autoscaling = intent.resources.autoscaling
    if autoscaling is None:  # the documented defaults
        autoscaling = IntentAutoscaling()
    return ScaleRange(
        min=replicas.min,
        max=replicas.max,
        target_in_flight=autoscaling.target_in_flight,
        up_after_s=autoscaling.scale_up_after_s,
        down_after_s=autoscaling.scale_down_after_s,
        idle_to_zero_after_s=autoscaling.idle_to_zero_after_s,
    )


@dataclass(slots=True)
class _Tracked:
    """One endpoint's autoscaled revision and what was last decided for it."""

    label: str
    range: ScaleRange
    decider: ScaleDecider
    replicas: int = 0
    desired: int = 0
    reason: str = ""
    sent: int | None = None  # calls sent to its replicas at the last tick


class Autoscaler:
    """Scales stable revisions between their intent's min and max replicas."""

    def __init__(
        self,
        plane: ControlPlane,
        load: Load,
        *,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = plane
        self._load = load
        self._tick_s = tick_s
        self._clock = clock
        self._ranges: dict[str, ScaleRange] = {}
        self._tracked: dict[str, _Tracked] = {}
        self._scaling: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0

    async def start(self) -> None:
        await self._read_intents()
        self._task = asyncio.create_task(self._loop(), name="modelport-autoscaler")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._scaling.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def view(self, name: str) -> dict[str, Any] | None:
        """``{replicas, desired, reason}`` of an autoscaled endpoint (call on the loop)."""
        tracked = self._tracked.get(name)
        if tracked is None:
            return None
        stable = self.plane.stable(name)
        if stable is not None and stable.label == tracked.label:  # live, not as of the tick
            tracked.replicas = len(self.plane.backend.status(stable.spec.group))
        return {"replicas": tracked.replicas, "desired": tracked.desired, "reason": tracked.reason}

    def wake(self, name: str, label: str) -> bool:
        """A request found ``label`` without a ready replica: True when it may scale to zero
        (then it is started now, if it is not already starting), False when nothing will wake
        it. Called on the event loop by the gateway; never blocks."""
        tracked = self._tracked.get(name)
        stable = self.plane.stable(name)
        if tracked is None or tracked.range.min != 0 or stable is None or stable.label != label:
            return False
        group = stable.spec.group
        if not self.plane.backend.status(group) and name not in self._scaling:
            tracked.reason = "woken by a request"
            tracked.desired = max(1, tracked.decider.wanted(1))
            self._scale(name, label, group, 0, tracked.desired, tracked.reason)
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._ticks += 1
                if self._ticks % _INTENTS_EVERY == 0:
                    await self._read_intents()
                self.tick()
            except Exception:  # the loop must outlive any one endpoint's error
                log.exception("autoscaler tick failed")

    async def _read_intents(self) -> None:
        def read() -> dict[str, ScaleRange]:
            ranges = {}
            with self.plane.db.session() as session:
                for row in endpoint_service.list_endpoints(session):
                    try:
                        scale = scale_range_of(endpoint_service.intent_of(row))
                    except ValueError:  # an intent stored by an older version: not scaled
                        continue
                    if scale is not None:
                        ranges[row.name] = scale
            return ranges

        self._ranges = await asyncio.to_thread(read)

    def tick(self) -> None:
        """One round of decisions (on the event loop)."""
        now = self._clock()
        loads = self._load()
        for name in self._tracked.keys() - self._ranges.keys():
            del self._tracked[name]  # no longer autoscaled (or deleted)
        for name, scale in self._ranges.items():
            stable = self.plane.stable(name)
            if stable is None or stable.remote is not None:
                self._tracked.pop(name, None)
                continue
            tracked = self._tracked.get(name)
            if tracked is None or tracked.label != stable.label or tracked.range != scale:
                tracked = _Tracked(stable.label, scale, scale.decider())
                self._tracked[name] = tracked
            group = stable.spec.group
            current = len(self.plane.backend.status(group))
            in_flight, sent = loads.get((name, stable.label), (0, 0))
            requests = int(tracked.sent is not None and sent != tracked.sent)
            if current and not self.plane.backend.ready(group):
                # Starting (or restarting): not idle, whatever it was sent; a revision is
                # never scaled to zero before its first replica could take a request.
                requests = 1
            tracked.sent = sent
            tracked.replicas = current
            if name in self._scaling:  # the last change is still being made
                continue
            desired = tracked.decider.observe(now, in_flight, current, requests)
            tracked.reason = tracked.decider.reason
            tracked.desired = current if desired is None else desired
            if desired is not None and desired != current:
                self._scale(name, stable.label, group, current, desired, tracked.reason)

    def _scale(
        self, name: str, label: str, group: str, before: int, after: int, reason: str
    ) -> None:
        log.info("endpoint %s %s: %d -> %d replica(s): %s", name, label, before, after, reason)

        async def scale() -> None:
            try:
                await self.plane.backend.scale(group, after)
                tracked = self._tracked.get(name)
                if tracked is not None and tracked.label == label:
                    tracked.replicas = len(self.plane.backend.status(group))
                await asyncio.to_thread(self._audit, name, label, before, after, reason)
            except Exception:
                log.exception("scaling endpoint %s %s to %d failed", name, label, after)
            finally:
                self._scaling.pop(name, None)

        self._scaling[name] = asyncio.create_task(scale(), name=f"scale {name}")

    def _audit(self, name: str, label: str, before: int, after: int, reason: str) -> None:
        try:
            self.plane.audit.record(
                actor=SYSTEM,
                action="endpoints.scale",
                target=f"endpoint:{name}",
                before={"revision": label, "replicas": before},
                after={"revision": label, "replicas": after},
                details={"revision": label, "replicas": after, "reason": reason},
            )
        except Exception:  # the change is made; a lost record must not undo it
            log.exception("audit entry not stored: system endpoints.scale of %s", name)
