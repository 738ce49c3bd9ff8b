"""How many replicas a revision should run, from the load it has had: the autoscaler's
decision, kept free of clocks, processes and I/O so that it can be tested step by step.

The load is the requests in flight at the revision (sent to a replica, or waiting in the
gateway for a connection or for a replica to start). ``ceil(load / target_in_flight)``
replicas would give each replica its target; that raw figure jumps with every burst, so it
is stabilised the way Kubernetes' HPA does it:

- up only when the load has called for more for ``up_after_s`` in a row (the fewest it
  called for over that window is what is started: a one-second burst starts nothing);
- down only when it has allowed fewer for ``down_after_s`` in a row (the most it called for
  over that window is what is kept), so that replicas do not flap between two counts;
- to zero (``min`` 0 only) after ``idle_to_zero_after_s`` without a single request; from zero,
  at once, since a request is waiting for the replica.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ScaleDecider"]


@dataclass(slots=True)
class ScaleDecider:
    """One revision's stabilised replica count; feed it one ``observe`` per tick."""

    min: int
    max: int
    target_in_flight: float
    up_after_s: float
    down_after_s: float
    idle_to_zero_after_s: float
    reason: str = ""  # why the last decision was made (or why the count is kept)
    _history: deque[tuple[float, int]] = field(default_factory=deque)
    _since: float | None = None  # first observation: windows are not full before
    _last_request: float | None = None

    def wanted(self, in_flight: float) -> int:
        """Replicas the load calls for right now, within [max(min, 1), max]: zero is only
        ever reached by the idle rule."""
        raw = math.ceil(in_flight / self.target_in_flight) if in_flight > 0 else 0
        return max(max(self.min, 1), min(self.max, raw))

    def observe(
        self, now: float, in_flight_total: float, replicas: int, requests: int = 0
    ) -> int | None:
        """The replica count to move to, or None to keep ``replicas`` (the count running or
        starting now). ``requests``: calls that reached the revision since the last
        observation (a call shorter than a tick is never seen in flight)."""
        if self._since is None:
            self._since = self._last_request = now
        if requests > 0 or in_flight_total > 0:
            self._last_request = now
        wanted = self.wanted(in_flight_total)
        history = self._history
        history.append((now, wanted))
        horizon = now - max(self.up_after_s, self.down_after_s)
        while len(history) > 1 and history[0][0] < horizon:
            history.popleft()
        if replicas == 0:
            if in_flight_total > 0 or requests > 0:
                self.reason = f"woken by a request ({in_flight_total:g} in flight)"
                return wanted
            idle_s = now - (now if self._last_request is None else self._last_request)
            self.reason = f"no request for {idle_s:.0f} s: scaled to zero"
            return None
        if replicas < max(self.min, 1) or replicas > self.max:  # the range itself changed
            self.reason = f"outside replicas {self.min}..{self.max}"
            return max(max(self.min, 1), min(self.max, replicas))
        up = self._held(now, self.up_after_s, highest=False)
        if up is not None and up > replicas:
            self.reason = (
                f"{in_flight_total:g} in flight, above {self.target_in_flight:g} per replica "
                f"for {self.up_after_s:g} s"
            )
            return up
        idle_s = now - (now if self._last_request is None else self._last_request)
        if self.min == 0 and idle_s >= self.idle_to_zero_after_s:
            self.reason = f"no request for {idle_s:.0f} s (idle_to_zero_after)"
            return 0
        down = self._held(now, self.down_after_s, highest=True)
        if down is not None and down < replicas:
            self.reason = (
                f"at most {down} replica(s) needed for {self.down_after_s:g} s "
                f"(target {self.target_in_flight:g} in flight each)"
            )
            return down
        self.reason = f"{in_flight_total:g} in flight: {replicas} replica(s) suffice"
        return None

    def _held(self, now: float, window_s: float, *, highest: bool) -> int | None:
        """The fewest (or, ``highest``, the most) replicas wanted over the last
        ``window_s``, or None before the decider has watched that long."""
        if self._since is None or now - self._since < window_s:
            return None
        start = now - window_s
        values = [wanted for at, wanted in self._history if at >= start]
        if not values:
            return None
        return max(values) if highest else min(values)
