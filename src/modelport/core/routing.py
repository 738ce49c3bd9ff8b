"""What the control plane hands the data plane: immutable snapshots, swapped atomically.

The gateway never queries storage per request: it reads the snapshot it was last given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["KeyPrincipal", "RemoteTarget", "Route", "RoutingSnapshot", "Upstream"]

_OPENAI_TASKS = frozenset({"chat", "completion", "embedding", "asr"})


@dataclass(frozen=True, slots=True)
class Upstream:
    """A ready replica's address (or an external server's)."""

    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """How to call an external model server: path, model name and credential it expects."""

    protocol: str  # "openai" or "v2"
    path_prefix: str  # the URL's path, e.g. "/v1" for an OpenAI base URL
    model: str
    authorization: bytes | None = None  # "Bearer <secret>", never logged


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint as the gateway sees it."""

    endpoint: str
    model: str
    version: int
    metadata: bytes  # V2 model metadata, serialized once when the snapshot is built
    token: bytes  # shared secret the endpoint's replicas require
    replicas: tuple[Upstream, ...] = ()
    task: str = "tabular"
    remote: RemoteTarget | None = None
    # Computed once per snapshot rather than once per request.
    infer_path: str = field(init=False, compare=False)
    revision: bytes = field(init=False, compare=False)
    bearer: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        infer = f"/v2/models/{self.endpoint}/infer"
        if self.remote is not None and self.remote.protocol == "v2":
            infer = f"{self.remote.path_prefix}/v2/models/{self.remote.model}/infer"
        object.__setattr__(self, "infer_path", infer)
        # Until revisions exist as objects of their own, a revision is a model version.
        object.__setattr__(self, "revision", f"{self.model}:{self.version}".encode())
        object.__setattr__(self, "bearer", b"Bearer " + self.token)

    @property
    def protocol(self) -> str:
        """``openai`` for generative, embedding and speech tasks, ``v2`` for tensors."""
        return "openai" if self.task in _OPENAI_TASKS else "v2"


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    routes: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, routes: list[Route]) -> RoutingSnapshot:
        return cls(MappingProxyType({route.endpoint: route for route in routes}))


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who an API key speaks for; the gateway finds it by the key's hash."""

    key_id: str
    project: str
    name: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
