"""What the control plane hands the data plane: immutable snapshots, swapped atomically.

The gateway never queries storage per request: it reads the snapshot it was last given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "BUCKETS",
    "KeyPrincipal",
    "RemoteTarget",
    "Route",
    "RoutingSnapshot",
    "SegmentRule",
    "Traffic",
    "Upstream",
]

BUCKETS = 10_000  # traffic splits are drawn per request in [0, BUCKETS): 0.01% steps
_OPENAI_TASKS = frozenset({"chat", "completion", "embedding", "asr"})
# Tasks whose call may run twice with no harm (a retry after a replica died mid-call).
_IDEMPOTENT_TASKS = frozenset({"tabular", "vision", "embedding"})


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
    authorization: bytes | None = field(default=None, repr=False)  # "Bearer <secret>"


@dataclass(frozen=True, slots=True)
class Route:
    """One running revision of an endpoint, as the gateway sees it."""

    endpoint: str
    model: str
    version: int
    metadata: bytes  # V2 model metadata, serialized once when the snapshot is built
    token: bytes = field(repr=False)  # shared secret the endpoint's replicas require
    replicas: tuple[Upstream, ...] = ()
    task: str = "tabular"
    remote: RemoteTarget | None = None
    label: str = "r1"  # the revision: r1, r2, ...
    # The upstream reports units as OpenAI ``usage`` in its answers (vLLM, an external
    # OpenAI-compatible server), not in ``x-modelport-units``.
    openai_usage: bool = False
    # Computed once per snapshot rather than once per request.
    infer_path: str = field(init=False, compare=False)
    revision: bytes = field(init=False, compare=False)
    bearer: bytes = field(init=False, compare=False, repr=False)
    idempotent: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        infer = f"/v2/models/{self.endpoint}/infer"
        if self.remote is not None and self.remote.protocol == "v2":
            infer = f"{self.remote.path_prefix}/v2/models/{self.remote.model}/infer"
        object.__setattr__(self, "infer_path", infer)
        object.__setattr__(self, "revision", self.label.encode())  # x-modelport-revision
        object.__setattr__(self, "bearer", b"Bearer " + self.token)
        object.__setattr__(self, "idempotent", self.task in _IDEMPOTENT_TASKS)

    @property
    def protocol(self) -> str:
        """``openai`` for generative, embedding and speech tasks, ``v2`` for tensors."""
        return "openai" if self.task in _OPENAI_TASKS else "v2"


@dataclass(frozen=True, slots=True)
class SegmentRule:
    """Requests that match go to ``route``: a header's value, or the caller's customer, key id
    or project."""

    kind: str  # "header" | "customer" | "key" | "project"
    value: str
    route: Route
    header: bytes = b""  # lower-case header name, for kind "header"


@dataclass(frozen=True, slots=True)
class Traffic:
    """How one endpoint's requests are spread over its running revisions.

    ``split`` holds (upper bound, revision) pairs over buckets 0..9999: a request whose bucket
    is below the first bound goes to the first revision, and so on. Empty means everything
    goes to ``primary``, the stable revision, which also answers metadata and readiness.
    """

    primary: Route
    revisions: Mapping[str, Route]  # every running revision by label, for pinned calls
    split: tuple[tuple[int, Route], ...] = ()
    segments: tuple[SegmentRule, ...] = ()
    sticky: str = "none"  # "customer" | "key" | "none"
    shadow: Route | None = None
    shadow_sample: float = 0.0
    # Where a failed call (5xx, timeout, no replica) goes next, by revision label: another
    # revision of this endpoint, or another endpoint by name.
    fallback: Mapping[str, tuple[Route | str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    timeout_s: float | None = None  # the endpoint's deadline per request; None: the server's
    # Who may call: "project:x", "team:y", "key:<id>" (the intent's ``consumers``, with the
    # endpoint's own project added); empty: every key (snapshots built by hand, tests).
    consumers: frozenset[str] = frozenset()

    @property
    def endpoint(self) -> str:
        return self.primary.endpoint

    @classmethod
    def single(cls, route: Route) -> Traffic:
        return cls(primary=route, revisions=MappingProxyType({route.label: route}))


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    routes: Mapping[str, Traffic] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, traffic: list[Traffic]) -> RoutingSnapshot:
        return cls(MappingProxyType({t.endpoint: t for t in traffic}))


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who an API key speaks for; the gateway finds it by the key's hash."""

    key_id: str
    project: str
    name: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # The team the key's spending is reported under; "" when the key has none.
    team: str = ""
    # Endpoint names the key may call; empty: every endpoint whose consumers admit its project.
    scopes: frozenset[str] = frozenset()
    expires_at: float | None = None  # unix time after which the gateway refuses the key
    can_pin: bool = False  # may pin a revision (``ep@rN``, ``/versions/rN``)
    can_route_by_header: bool = False  # header segment rules apply to its requests
    # Customers it may name in ``X-Modelport-Customer`` / OpenAI ``user``; "*" any.
    customers: frozenset[str] = frozenset()
    # The consumers entries that admit this key ("project:x", "team:y", "key:id"), computed
    # once so the scope check is a set intersection per request.
    grants: frozenset[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        grants = {f"project:{self.project}", f"key:{self.key_id}"}
        if self.team:
            grants.add(f"team:{self.team}")
        object.__setattr__(self, "grants", frozenset(grants))

    def may_name_customer(self, customer: str) -> bool:
        """Whether the key may bill or route as ``customer``."""
        return customer in self.customers or "*" in self.customers
