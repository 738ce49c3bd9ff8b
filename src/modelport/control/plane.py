"""The control plane: owns state, reconciles replicas with it, and publishes snapshots.

Every change that the data plane must see (an endpoint created or deleted, a replica turning
ready, a key created or revoked) ends in a fresh immutable snapshot handed to the gateway.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from modelport.backends import Backend
from modelport.control import endpoints as endpoint_service
from modelport.control import keys as key_service
from modelport.control import registry
from modelport.control.schemas import EndpointPublic, VersionCreate, VersionPublic
from modelport.core.enums import EndpointStatus, ReplicaState
from modelport.core.errors import ModelportError
from modelport.core.replica import ReplicaSpec
from modelport.core.routing import KeyPrincipal, RemoteTarget, Route, RoutingSnapshot, Upstream
from modelport.core.settings import Settings
from modelport.core.signature import Signature
from modelport.governance import SecretStore, hash_secret
from modelport.observability import RecentUsage
from modelport.runtimes import runtime_class
from modelport.runtimes.registry import REMOTE_RUNTIMES
from modelport.store import ArtifactStore, Database
from modelport.store.tables import EndpointRow

__all__ = ["ControlPlane"]

log = logging.getLogger("modelport.control")


@dataclass(frozen=True, slots=True)
class _Deployment:
    spec: ReplicaSpec
    replicas: int
    token: bytes
    metadata: bytes
    remote: RemoteTarget | None = None
    remote_address: Upstream | None = None


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
        self.secrets = secrets
        self._deployments: dict[str, _Deployment] = {}
        self._lock = asyncio.Lock()
        backend.on_change = self.refresh_routes

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(hash_secret(token).encode(), self._admin_hash)

    async def start(self) -> None:
        """Start replicas for every stored endpoint and publish keys and routes."""
        await self.backend.start()
        await self.refresh_keys()
        rows = await asyncio.to_thread(self._load_deployments)
        for name, deployment in rows.items():
            await self._deploy(name, deployment)
        self.refresh_routes()

    async def close(self) -> None:
        await self.backend.close()

    def _load_deployments(self) -> dict[str, _Deployment]:
        deployments = {}
        with self.db.session() as session:
            for row in endpoint_service.list_endpoints(session):
                try:
                    deployments[row.name] = self._deployment(row)
                except ModelportError as exc:  # e.g. a deleted secret: keep the rest serving
                    log.error("endpoint %s not deployed: %s", row.name, exc.message)
        return deployments

    def prepare(self, row: EndpointRow) -> _Deployment:
        """Everything needed to serve a stored endpoint; raises if it cannot be served, so
        that the caller can roll back the row it is creating."""
        return self._deployment(row)

    async def activate(self, name: str, deployment: _Deployment) -> None:
        """Start serving a prepared deployment."""
        await self._deploy(name, deployment)

    def _deployment(self, row: EndpointRow) -> _Deployment:
        version = row.version
        signature = Signature.model_validate(version.signature)
        spec = ReplicaSpec(
            endpoint=row.name,
            model=version.model.name,
            version=version.version,
            runtime=version.runtime,
            task=version.model.task,
            artifact_dir=(
                self.artifacts.path(version.artifact_digest) if version.artifact_digest else Path()
            ),
            artifact_digest=version.artifact_digest,
            signature=signature,
            options=version.runtime_options,
            max_body_bytes=self.settings.max_body_bytes,
            batching=row.batching,
        )
        metadata = orjson.dumps(
            {
                "name": row.name,
                "versions": [str(version.version)],
                "platform": version.runtime,
                **signature.to_v2_metadata(),
            }
        )
        token = secrets.token_urlsafe(24).encode()
        deployment = _Deployment(spec=spec, replicas=row.replicas, token=token, metadata=metadata)
        if version.runtime in REMOTE_RUNTIMES:
            return self._remote(deployment, row.name)
        return deployment

    def _remote(self, deployment: _Deployment, endpoint: str) -> _Deployment:
        """An external server: its address, path, model name and credential, from options."""
        options = deployment.spec.options
        url = urlsplit(options["url"])
        tls = url.scheme == "https"
        address = Upstream(url.hostname or "", url.port or (443 if tls else 80), tls)
        credential = options.get("credential")
        target = RemoteTarget(
            protocol=runtime_class(deployment.spec.runtime).remote_protocol,  # type: ignore[attr-defined]
            path_prefix=url.path.rstrip("/"),
            model=options.get("model", endpoint),
            authorization=(
                b"Bearer " + self.secrets.get(credential).strip().encode() if credential else None
            ),
        )
        return replace(deployment, remote=target, remote_address=address)

    async def deploy(self, row: EndpointRow) -> None:
        """Start (or replace) the replicas behind a stored endpoint."""
        await self._deploy(row.name, self._deployment(row))

    async def _deploy(self, name: str, deployment: _Deployment) -> None:
        async with self._lock:
            self._deployments[name] = deployment
            if deployment.remote is None:
                await self.backend.deploy(deployment.spec, deployment.replicas, deployment.token)
            self.refresh_routes()

    async def undeploy(self, name: str) -> None:
        async with self._lock:
            self._deployments.pop(name, None)
            self.refresh_routes()  # stop routing first, then drain
            await self.backend.remove(name)

    def refresh_routes(self) -> None:
        """Build and publish a new routing snapshot from deployments and ready replicas."""
        routes = [
            Route(
                endpoint=name,
                model=d.spec.model,
                version=d.spec.version,
                metadata=d.metadata,
                token=d.token,
                replicas=(d.remote_address,) if d.remote_address else self.backend.ready(name),
                task=d.spec.task,
                remote=d.remote,
            )
            for name, d in self._deployments.items()
        ]
        self._publish_routes(RoutingSnapshot.of(routes))

    async def refresh_keys(self) -> None:
        def load() -> dict[str, KeyPrincipal]:
            with self.db.session() as session:
                return key_service.active_keys(session)

        self._publish_keys(await asyncio.to_thread(load))

    def register_version(
        self, model: str, body: VersionCreate, *, created_by: str
    ) -> VersionPublic:
        """Add a version; an artifact ingested for it from a path is removed if that fails."""
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
                return registry.version_public(row)
        except Exception:
            if ingested is not None:
                self.artifacts.discard(ingested.digest)
            raise

    def endpoint_public(self, row: EndpointRow) -> EndpointPublic:
        replicas = self.backend.status(row.name)
        ready = sum(r.state == ReplicaState.READY for r in replicas)
        if row.version.runtime in REMOTE_RUNTIMES:
            status = EndpointStatus.READY  # an external server: no replicas of ours
        elif ready and ready == len(replicas):
            status = EndpointStatus.READY
        elif ready:
            status = EndpointStatus.DEGRADED
        elif any(r.restarts >= 3 for r in replicas):
            status = EndpointStatus.FAILED
        else:
            status = EndpointStatus.PENDING
        return EndpointPublic(
            name=row.name,
            model_ref=row.model_ref,
            model=row.version.model.name,
            version=row.version.version,
            runtime=row.version.runtime,
            replicas=row.replicas,
            batching=row.batching,
            status=status,
            replica_status=replicas,
            url=f"/v2/models/{row.name}",
            created_at=row.created_at,
        )
