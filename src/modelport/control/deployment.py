"""A revision prepared to run: its replica spec, and what the gateway needs to call it.

Preparing reads the stored rows and the settings but starts nothing, so it can run inside the
transaction that writes a revision: if it raises, that transaction rolls back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import object_session

from modelport.control.environments import environment_of, isolation_of
from modelport.core.replica import ReplicaIsolation, ReplicaSpec
from modelport.core.routing import RemoteTarget, Upstream
from modelport.core.settings import Settings
from modelport.core.signature import Signature
from modelport.governance import SecretStore
from modelport.runtimes import runtime_class
from modelport.runtimes.registry import REMOTE_RUNTIMES
from modelport.store import ArtifactStore
from modelport.store.tables import EndpointRow, ModelVersionRow, RevisionRow

__all__ = ["Deployment", "prepare", "replica_spec"]


@dataclass(frozen=True, slots=True)
class Deployment:
    """One revision, prepared to run: its replica spec and what the gateway needs to call it."""

    spec: ReplicaSpec
    replicas: int
    token: bytes
    signature: Signature
    remote: RemoteTarget | None = None
    remote_address: Upstream | None = None

    @property
    def label(self) -> str:
        return self.spec.revision


def prepare(
    settings: Settings,
    artifacts: ArtifactStore,
    secret_store: SecretStore,
    row: EndpointRow,
    revision: RevisionRow,
) -> Deployment:
    """Everything needed to run one revision; raises if it cannot run, so that the caller
    can roll back the rows it is writing."""
    version = revision.version
    signature = Signature.model_validate(version.signature)
    spec = replica_spec(
        settings,
        artifacts,
        version,
        endpoint=row.name,
        revision=revision.label,
        options=revision.runtime_options,
        batching=revision.batching,
        isolation=_isolation(row),
    )
    token = secrets.token_urlsafe(24).encode()
    deployment = Deployment(spec=spec, replicas=revision.replicas, token=token, signature=signature)
    if version.runtime in REMOTE_RUNTIMES:
        return _remote(deployment, row.name, secret_store)
    return deployment


def replica_spec(
    settings: Settings,
    artifacts: ArtifactStore,
    version: ModelVersionRow,
    *,
    endpoint: str,
    revision: str,
    options: dict[str, Any],
    batching: dict[str, Any] | None = None,
    isolation: ReplicaIsolation | None = None,
) -> ReplicaSpec:
    """The replica that runs ``version`` as ``endpoint@revision``: its artifact, signature,
    runtime options (the version's, overridden by ``options``) and the server's input limits."""
    return ReplicaSpec(
        endpoint=endpoint,
        revision=revision,
        model=version.model.name,
        version=version.version,
        runtime=version.runtime,
        task=version.model.task,
        artifact_dir=(
            artifacts.path(version.artifact_digest) if version.artifact_digest else Path()
        ),
        artifact_digest=version.artifact_digest,
        signature=Signature.model_validate(version.signature),
        options={**version.runtime_options, **options},
        max_body_bytes=settings.max_body_bytes,
        batching=batching,
        max_request_rows=settings.max_request_rows,
        max_tensor_elements=settings.max_tensor_elements,
        max_image_pixels=settings.max_image_pixels,
        max_audio_seconds=settings.max_audio_seconds,
        max_prompt_tokens=settings.max_prompt_tokens,
        max_embedding_inputs=settings.max_embedding_inputs,
        max_embedding_chars=settings.max_embedding_chars,
        isolation=isolation,
    )


def _isolation(row: EndpointRow) -> ReplicaIsolation | None:
    """The limits of the endpoint's environment, when it is an isolated one."""
    session = object_session(row)
    found = isolation_of(environment_of(session, row.intent)) if session is not None else None
    return ReplicaIsolation.model_validate(found) if found is not None else None


def _remote(deployment: Deployment, endpoint: str, secret_store: SecretStore) -> Deployment:
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
            b"Bearer " + secret_store.get(credential).strip().encode() if credential else None
        ),
    )
    return replace(deployment, remote=target, remote_address=address)
