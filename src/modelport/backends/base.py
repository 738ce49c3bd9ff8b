"""The backend plugin interface: start, watch and stop groups of replicas (one group per
revision of an endpoint)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from modelport.core.enums import ReplicaState
from modelport.core.replica import ReplicaSpec
from modelport.core.routing import Upstream

__all__ = ["Backend", "ReplicaStatus"]


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    index: int
    state: ReplicaState
    pid: int | None
    address: str
    restarts: int
    last_error: str | None


class Backend(ABC):
    """Runs replicas. ``on_change`` is called whenever the set of ready replicas changes."""

    on_change: Callable[[], None] = staticmethod(lambda: None)
    # Requests the gateway has in flight at a replica (set by the server): a replica scaled
    # away is stopped once it is out of routing and this reaches zero.
    in_flight: Callable[[Upstream], int] = staticmethod(lambda upstream: 0)

    @abstractmethod
    async def deploy(self, spec: ReplicaSpec, replicas: int, token: bytes) -> None:
        """Run ``replicas`` copies of ``spec`` as the group ``spec.group``; replaces what that
        group ran before. Each revision of an endpoint is a group of its own."""

    @abstractmethod
    async def scale(self, group: str, replicas: int) -> None:
        """Run ``replicas`` copies of a deployed group. New replicas start beside the running
        ones, which are left alone; surplus ones are drained: out of routing first (the
        change published), the requests sent to them finish, then they stop. Zero keeps the
        group known, so that it can be scaled up again."""

    @abstractmethod
    async def remove(self, group: str) -> None:
        """Stop a group's replicas, letting in-flight requests finish."""

    @abstractmethod
    def ready(self, group: str) -> tuple[Upstream, ...]:
        """Addresses of the group's replicas that pass their readiness check."""

    @abstractmethod
    def status(self, group: str) -> list[ReplicaStatus]:
        """Every replica of the group, ready or not."""

    @abstractmethod
    async def start(self) -> None:
        """Begin supervising."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every replica."""
