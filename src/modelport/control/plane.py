"""The control plane: owns state, reconciles replicas with it, and publishes snapshots.

Every change that the data plane must see (an endpoint created or deleted, a revision started
or stopped, traffic moved between revisions, a replica turning ready, a key created or revoked)
ends in a fresh immutable snapshot handed to the gateway. What one endpoint runs, and how that
becomes the snapshot (and the metrics' replica counts), is control/serving.py.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from modelport.backends import Backend
from modelport.control import endpoints as endpoint_service
from modelport.control import keys as key_service
from modelport.control import registry
from modelport.control import rollouts as rollout_service
from modelport.control.audit import AuditLog
from modelport.control.budgets import BudgetService
from modelport.control.concurrency import EndpointLocks, in_session
from modelport.control.deployment import Deployment, prepare
from modelport.control.drift import store_profile
from modelport.control.identity import IdentityBook
from modelport.control.limits import LimitBook
from modelport.control.policies import Policies
from modelport.control.schemas import VersionCreate, VersionPublic
from modelport.control.serving import Serving, replica_counts_of, shares_of, snapshot_of
from modelport.control.traffic import DEFAULT_CONSUMERS, consumers_of
from modelport.control.upstream_policy import check_upstream_url
from modelport.core.enums import ReplicaState
from modelport.core.errors import ModelportError, Unavailable
from modelport.core.intent import Routing
from modelport.core.routing import KeyPrincipal, RoutingSnapshot
from modelport.core.settings import Settings
from modelport.governance import SecretStore, hash_secret
from modelport.observability import RecentUsage
from modelport.observability.live_metrics import ReplicaCount
from modelport.observability.pricing import PriceBook
from modelport.runtimes.registry import REMOTE_RUNTIMES
from modelport.store import ArtifactStore, Database
from modelport.store.tables import EndpointRow, RevisionRow

__all__ = ["FAILED_AFTER_RESTARTS", "ControlPlane", "Deployment"]

log = logging.getLogger("modelport.control")

FAILED_AFTER_RESTARTS = 3
# Requests routed under the snapshot before a switch may still be on their way to the old
# revision's replicas: they get this long to arrive before those replicas begin draining.
_SWITCH_GRACE_S = 1.0
# How long a thread waits for the event loop to read live state for it. The loop answers in
# microseconds unless it is blocked, and then the API call fails rather than hangs.
_LOOP_READ_TIMEOUT_S = 10.0

T = TypeVar("T")


class ControlPlane:
    """State, reconciliation and publication; the API routes are thin adapters over it."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        artifacts: ArtifactStore,
        backend: Backend,
        admin_token: str,
        publish_routes: Callable[[RoutingSnapshot], None],
        publish_keys: Callable[[Mapping[str, KeyPrincipal]], None],
        usage: RecentUsage,
        secrets: SecretStore,
    ) -> None:
        self.settings = settings
        self.db = db
        self.artifacts = artifacts
        self.backend = backend
        self._admin_hash = hash_secret(admin_token).encode()
        self._publish_routes = publish_routes
        self._publish_keys = publish_keys
        self.usage = usage
        self.prices = PriceBook()  # the price catalog in memory (control/prices.py fills it)
        self.secrets = secrets
        self.audit = AuditLog(db, settings)  # who changed what (control/audit.py)
        # Users and their roles, in memory: the guard authenticates without a query.
        self.identities = IdentityBook(db)
        # Policies in force, in memory: checked at plan, apply, promote and key creation.
        self.policies = Policies(db, artifacts, self.audit)
        # Rate limits, published to the gateway's guards on every change (control/limits.py).
        self.limits = LimitBook(db)
        # Budgets: caps, their ledger and notices (control/budgets.py); set by the server.
        self.budgets: BudgetService | None = None
        self._serving: dict[str, Serving] = {}
        self._retirements: dict[str, asyncio.Task[None]] = {}
        self._draining: set[asyncio.Task[None]] = set()
        # Revisions taken out of routing whose replicas still run until their drain starts:
        # bringing one back reuses them (and their token) instead of racing the drain.
        self._retiring: dict[tuple[str, str], tuple[Deployment, asyncio.Task[None]]] = {}
        # Serialises changes to one endpoint's revisions (never held while a replica starts or
        # stops: other endpoints do not wait on it).
        self.lock = EndpointLocks()
        self._loop: asyncio.AbstractEventLoop | None = None
        backend.on_change = self.refresh_routes
        # An autoscaled endpoint's {replicas, desired, reason} for its view (read on the
        # loop); the server points it at the autoscaler.
        self.autoscaling: Callable[[str], dict[str, Any] | None] = lambda name: None

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(hash_secret(token).encode(), self._admin_hash)

    def on_loop(self, read: Callable[[], T]) -> T:
        """Run ``read`` on the event loop that owns the live state and return its result.

        The gateway, the supervisor and the rollout controller mutate the live state (serving
        revisions, replica states, SLO windows, shadow reports, recent usage) on the loop
        without locks; sync API routes run in a thread pool, so they read it through here
        rather than iterating containers that the loop changes under them."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            return read()

        async def call() -> T:
            return read()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(_LOOP_READ_TIMEOUT_S)

    async def start(self) -> None:
        """Start the stable revision of every stored endpoint (and the candidate of a rollout
        in progress, which the rollout controller then resumes), and publish keys and routes."""
        self._loop = asyncio.get_running_loop()
        self.audit.start()
        await self.backend.start()
        await self.refresh_keys()
        await self.identities.refresh()
        await asyncio.to_thread(self.policies.load)
        await self.limits.refresh()
        for name, deployments, routing, consumers in await asyncio.to_thread(self._load):
            try:
                await self.serve(name, deployments[0], routing=routing, consumers=consumers)
                for candidate in deployments[1:]:
                    await self.run_revision(name, candidate)
            except Exception:  # one endpoint that cannot start must not keep the rest down
                log.exception("endpoint %s could not be started", name)
        self.refresh_routes()

    async def close(self) -> None:
        for task in [*self._retirements.values(), *self._draining]:
            task.cancel()
        await self.backend.close()
        await asyncio.to_thread(self.audit.close)
        self._loop = None

    def _load(self) -> list[tuple[str, list[Deployment], Routing | None, frozenset[str]]]:
        loaded = []
        with self.db.session() as session:
            for row in endpoint_service.list_endpoints(session):
                try:
                    revisions = [endpoint_service.get_revision(session, row, row.stable_revision)]
                    rollout = rollout_service.active_rollout(session, row)
                    if rollout is not None:
                        revisions.append(
                            endpoint_service.get_revision(session, row, rollout.to_revision)
                        )
                    deployments = [self.prepare(row, revision) for revision in revisions]
                except ModelportError as exc:  # e.g. a deleted secret: keep the rest serving
                    log.error("endpoint %s not deployed: %s", row.name, exc.message)
                    continue
                intent = endpoint_service.intent_of(row)
                loaded.append(
                    (row.name, deployments, endpoint_service.routing_of(row), consumers_of(intent))
                )
        return loaded

    def prepare(self, row: EndpointRow, revision: RevisionRow) -> Deployment:
        """Everything needed to run one revision; raises if it cannot run, so that the caller
        can roll back the rows it is writing."""
        return prepare(self.settings, self.artifacts, self.secrets, row, revision)

    # -- revisions and traffic ----------------------------------------------------------------

    async def serve(
        self,
        name: str,
        deployment: Deployment,
        *,
        routing: Routing | None = None,
        consumers: frozenset[str] | None = None,
    ) -> None:
        """Make ``deployment`` the endpoint's only revision, taking all of its traffic. If its
        replicas cannot be started, the endpoint is left as it was and the error raised."""
        async with self.lock(name):
            old = self._serving.get(name)
            deployment = self._revive(name, deployment)
            self._serving[name] = Serving(
                revisions={deployment.label: deployment},
                stable=deployment.label,
                routing=routing if routing is not None else (old.routing if old else None),
                consumers=(
                    consumers
                    if consumers is not None
                    else (old.consumers if old else DEFAULT_CONSUMERS)
                ),
            )
            try:
                await self._start(deployment)
            except BaseException:
                if old is None:
                    self._serving.pop(name, None)
                else:
                    self._serving[name] = old
                self.refresh_routes()
                raise
            self.refresh_routes()
        if old is not None:
            for label in old.revisions.keys() - {deployment.label}:
                self._retire(name, label)

    async def run_revision(self, name: str, deployment: Deployment) -> None:
        """Start a revision beside the stable one; it gets no traffic until told. If its
        replicas cannot be started, nothing of it is left running and the error raised."""
        async with self.lock(name):
            serving = self._serving.get(name)
            if serving is None:
                raise Unavailable(
                    f"endpoint '{name}' is not deployed (see the server log for why): delete "
                    "and apply it again"
                )
            deployment = self._revive(name, deployment)
            serving.revisions[deployment.label] = deployment
            serving.candidate = deployment.label
            serving.weight = 0.0
            serving.shadow_sample = 0.0
            try:
                await self._start(deployment)
            except BaseException:
                serving.candidate = None
                if deployment.label not in (serving.stable, serving.previous):
                    self._retire(name, deployment.label)
                self.refresh_routes()
                raise
            self.refresh_routes()

    def _revive(self, name: str, deployment: Deployment) -> Deployment:
        """A revision brought back while its replicas await their drain: cancel the drain and
        keep those replicas, with the token they were started with (a fresh token would make
        them answer 401, and the drain would then stop them under live traffic)."""
        retiring = self._retiring.pop((name, deployment.label), None)
        if retiring is None:
            return deployment
        previous, task = retiring
        task.cancel()
        return previous

    def set_traffic(
        self,
        name: str,
        *,
        weight: float | None = None,
        shadow_sample: float | None = None,
        routing: Routing | None = None,
        consumers: frozenset[str] | None = None,
    ) -> None:
        """Change how much traffic the candidate answers (or mirrors); published at once. An
        endpoint not deployed reads its routing from its stored intent when it is."""
        serving = self._serving.get(name)
        if serving is None:
            return
        if weight is not None:
            serving.weight = weight
        if shadow_sample is not None:
            serving.shadow_sample = shadow_sample
        if routing is not None:
            serving.routing = routing
        if consumers is not None:
            serving.consumers = consumers
        self.refresh_routes()

    async def switch(self, name: str, label: str, *, keep_previous_s: float = 0.0) -> None:
        """Make ``label`` the stable revision with all traffic, atomically. The old stable
        revision is drained and stopped, or kept warm ``keep_previous_s`` for a quick way back."""
        serving = self._serving[name]
        old = serving.stable
        serving.stable = label
        serving.candidate = None
        serving.weight = serving.shadow_sample = 0.0
        stale = serving.previous
        serving.previous = old if keep_previous_s > 0 and old != label else None
        self.refresh_routes()
        if stale is not None and stale not in (label, serving.previous):
            self._retire(name, stale)
        if serving.previous is None and old != label:
            self._retire(name, old)
        elif serving.previous is not None:
            previous = serving.previous

            async def retire() -> None:
                await asyncio.sleep(keep_previous_s)
                current = self._serving.get(name)
                if current is not None and current.previous == previous:
                    current.previous = None
                    self.refresh_routes()
                    if previous not in (current.stable, current.candidate):
                        self._retire(name, previous)

            self._retirements[name] = asyncio.create_task(retire())

    async def drop_candidate(self, name: str) -> None:
        """Send all traffic back to the stable revision at once, then stop the candidate."""
        serving = self._serving.get(name)
        if serving is None or serving.candidate is None:
            return
        label, serving.candidate = serving.candidate, None
        serving.weight = serving.shadow_sample = 0.0
        self.refresh_routes()
        if label not in (serving.stable, serving.previous):
            self._retire(name, label)

    def replica_counts(self) -> list[ReplicaCount]:
        """How many replicas of each running revision are in each state, for metrics; an
        external endpoint counts as one ready replica. Call on the event loop."""
        return replica_counts_of(self._serving, self.backend)

    def serving_names(self) -> set[str]:
        return set(self._serving)

    def running(self, name: str) -> dict[str, Deployment]:
        """The endpoint's running revisions by label."""
        serving = self._serving.get(name)
        return dict(serving.revisions) if serving else {}

    def stable(self, name: str) -> Deployment | None:
        serving = self._serving.get(name)
        return serving.revisions.get(serving.stable) if serving else None

    def revision_health(self, name: str, label: str) -> tuple[bool, str | None]:
        """Whether every replica of a revision is ready, and why it cannot start if it
        keeps failing."""
        serving = self._serving.get(name)
        if serving is None:  # e.g. not deployed at start-up: a rollout of it cannot go on
            return False, f"endpoint '{name}' is not deployed"
        deployment = serving.revisions.get(label)
        if deployment is None:
            return False, f"revision {label} is not running"
        if deployment.remote is not None:
            return True, None
        replicas = self.backend.status(deployment.spec.group)
        ready = bool(replicas) and all(r.state == ReplicaState.READY for r in replicas)
        failing = [r for r in replicas if r.restarts >= FAILED_AFTER_RESTARTS]
        if failing:
            return False, f"replica {failing[0].index} failed to start: {failing[0].last_error}"
        return ready, None

    async def undeploy(self, name: str) -> None:
        async with self.lock(name):
            serving = self._serving.pop(name, None)
            task = self._retirements.pop(name, None)
            if task is not None:
                task.cancel()
            self.refresh_routes()  # stop routing first, then drain
            deployments = list((serving.revisions if serving else {}).values())
            for key in [k for k in self._retiring if k[0] == name]:
                deployment, drain = self._retiring.pop(key)
                drain.cancel()
                deployments.append(deployment)
        # Stopping waits for in-flight requests: not under the endpoint's lock.
        await asyncio.gather(
            *(self.backend.remove(d.spec.group) for d in deployments if d.remote is None)
        )

    async def _start(self, deployment: Deployment) -> None:
        if deployment.remote is None:
            # A revision that may scale to zero (replicas.min 0) still starts with one: it is
            # checked, and takes its first requests, before the autoscaler may stop it.
            replicas = max(1, deployment.replicas)
            await self.backend.deploy(deployment.spec, replicas, deployment.token)

    def _retire(self, name: str, label: str) -> None:
        """Take a revision out of routing now; stop its replicas in the background, once
        requests already routed to it (under the previous snapshot) have had time to arrive
        and finish. Callers (a rollback above all) do not wait for the drain."""
        serving = self._serving.get(name)
        deployment = serving.revisions.pop(label, None) if serving else None
        if deployment is None:
            return
        self.refresh_routes()
        if deployment.remote is not None:
            return
        key = (name, label)

        async def drain() -> None:
            await asyncio.sleep(_SWITCH_GRACE_S)
            # From here on the replicas are going: bringing the revision back starts new ones.
            if self._retiring.get(key, (None, None))[1] is task:
                del self._retiring[key]
            await self.backend.remove(deployment.spec.group)

        task = asyncio.create_task(drain())
        self._retiring[key] = (deployment, task)
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def refresh_routes(self) -> None:
        """Build and publish a new routing snapshot from deployments and ready replicas."""
        self._publish_routes(snapshot_of(self._serving, self.backend))

    async def refresh_keys(self) -> None:
        self._publish_keys(await in_session(self.db, key_service.active_keys))

    def register_version(
        self, model: str, body: VersionCreate, *, created_by: str
    ) -> VersionPublic:
        """Add a version; an artifact ingested for it from a path is removed if that fails."""
        url = (body.runtime_options or {}).get("url")
        if body.runtime in REMOTE_RUNTIMES and isinstance(url, str):
            check_upstream_url(
                url,
                own=(self.settings.host, self.settings.port),
                allow_internal=self.settings.allow_internal_upstreams,
            )
        digest = body.artifact_digest
        ingested = None
        if body.artifact_path is not None:
            artifact = self.artifacts.ingest(Path(body.artifact_path))
            ingested = artifact if artifact.created else None
            digest = artifact.digest
        try:
            with self.db.session() as session:
                row = registry.create_version(
                    session,
                    self.artifacts,
                    model=model,
                    runtime=body.runtime,
                    artifact_digest=digest,
                    signature=body.signature,
                    metrics=body.metrics,
                    tags=body.tags,
                    runtime_options=body.runtime_options,
                    reference_digest=body.reference_digest,
                    created_by=created_by,
                )
                # Reference data that does not fit the model fails the whole registration.
                store_profile(session, self.artifacts, row, row.model.task)
                return registry.version_public(row)
        except Exception:
            if ingested is not None:
                self.artifacts.discard(ingested.digest)
            raise

    def traffic_shares(self, name: str) -> dict[str, float]:
        """Each running revision's percentage of unpinned live traffic."""
        return shares_of(self._serving.get(name))
