"""Which replica gets a request: the one with the fewest requests in flight.

Counts live in the gateway, not in the routing snapshot, so they survive snapshot swaps; ties
rotate, so idle replicas share the load evenly.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from modelport.core.routing import Route, RoutingSnapshot, Upstream
from modelport.observability.live_metrics import Load

__all__ = ["LeastOutstanding"]


class LeastOutstanding:
    def __init__(self) -> None:
        self._in_flight: defaultdict[Upstream, int] = defaultdict(int)
        # Calls sent to each replica, ever: how the autoscaler tells an idle revision from
        # one whose calls are all shorter than its tick.
        self._sent: defaultdict[Upstream, int] = defaultdict(int)
        self._turn = itertools.count()

    @property
    def in_flight_counts(self) -> defaultdict[Upstream, int]:
        """The live counts, for the hot path to update without a context manager's cost."""
        return self._in_flight

    @property
    def sent_counts(self) -> defaultdict[Upstream, int]:
        """Calls sent to each replica so far, updated on the hot path like the live counts."""
        return self._sent

    def choose(self, route: Route, skip: Upstream | None = None) -> Upstream | None:
        """The least busy ready replica, avoiding ``skip`` when another exists."""
        replicas = route.replicas
        count = len(replicas)
        if count == 0:
            return None
        if count == 1:
            return replicas[0]
        start = next(self._turn)
        best, best_load = None, -1
        for offset in range(count):
            candidate = replicas[(start + offset) % count]
            if candidate == skip:
                continue
            load = self._in_flight[candidate]
            if best is None or load < best_load:
                best, best_load = candidate, load
        return best

    @contextmanager
    def track(self, upstream: Upstream) -> Iterator[None]:
        self._in_flight[upstream] += 1
        try:
            yield
        finally:
            self._in_flight[upstream] -= 1

    def in_flight(self, upstream: Upstream) -> int:
        return self._in_flight[upstream]

    def load(self, snapshot: RoutingSnapshot, queued: Callable[[Upstream], int]) -> list[Load]:
        """Requests at each running revision's replicas, and those waiting in the gateway for
        a connection to one (read by metrics at scrape time, on the event loop)."""
        counts = self._in_flight
        loads = []
        for traffic in snapshot.routes.values():
            for route in traffic.revisions.values():
                waiting = sum(queued(replica) for replica in route.replicas)
                # A request counts as in flight from before it waits for a connection.
                sent = sum(counts.get(replica, 0) for replica in route.replicas) - waiting
                loads.append(Load(route.endpoint, route.label, route.task, sent, waiting))
        return loads
