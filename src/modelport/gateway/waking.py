"""Waking a revision scaled to zero: the first request asks for a replica and waits for one.

Only requests that find their revision with no ready replica come here (the hot path pays one
``if not route.replicas``). Each asks the control plane to start the revision (``on_wake``,
which must not block and may be called once per waiting request); when the plane says it is
waking it (a revision allowed to scale to zero), the request watches the routing snapshot
until the revision has a ready replica. Any other revision without a replica (crashed, still
starting) answers 503 at once, as before. The caller bounds the wait with the
request's deadline; a revision that left the snapshot meanwhile is answered as before (503).
While they wait, requests count as load on their revision, so the autoscaler sees them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from modelport.core.routing import Route, RoutingSnapshot
from modelport.gateway.balancing import LeastOutstanding

__all__ = ["Waker"]

_POLL_S = 0.05  # how often a waiting request looks at the snapshot again


class Waker:
    """Holds requests for revisions with no replica until one is ready."""

    def __init__(self, snapshot: Callable[[], RoutingSnapshot]) -> None:
        self._snapshot = snapshot
        # Called with (endpoint, revision label) for each request that finds no replica; True
        # when the revision is being woken. Set by the server to the autoscaler's wake.
        self.on_wake: Callable[[str, str], bool] | None = None
        self.waiting: defaultdict[tuple[str, str], int] = defaultdict(int)

    def load(
        self, snapshot: RoutingSnapshot, balancer: LeastOutstanding
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (endpoint, revision label) of ``snapshot``: requests in flight at its replicas
        plus those waiting here for one, and the calls sent to its replicas so far."""
        in_flight, sent, waiting = balancer.in_flight_counts, balancer.sent_counts, self.waiting
        loads = {}
        for traffic in snapshot.routes.values():
            for route in traffic.revisions.values():
                key = (route.endpoint, route.label)
                loads[key] = (
                    sum(in_flight.get(r, 0) for r in route.replicas) + waiting.get(key, 0),
                    sum(sent.get(r, 0) for r in route.replicas),
                )
        return loads

    async def ready(self, route: Route) -> Route:
        """``route`` as the snapshot has it once it has a ready replica; ``route`` itself
        when nothing can wake it (no callback, or the revision is no longer routed)."""
        wake = self.on_wake
        if wake is None or route.remote is not None:
            return route
        key = (route.endpoint, route.label)
        if not wake(*key):
            return route
        self.waiting[key] += 1
        try:
            while True:
                traffic = self._snapshot().routes.get(route.endpoint)
                current = traffic.revisions.get(route.label) if traffic is not None else None
                if current is None:
                    return route
                if current.replicas:
                    return current
                await asyncio.sleep(_POLL_S)
        finally:
            self.waiting[key] -= 1
            if not self.waiting[key]:
                del self.waiting[key]
