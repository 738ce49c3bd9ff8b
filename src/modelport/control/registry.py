"""Registry service: models, immutable numbered versions, and aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelport.control.schemas import ModelPublic, VersionPublic
from modelport.core.enums import Task
from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.names import ModelRef, check_name
from modelport.core.signature import Signature
from modelport.runtimes.inspection import inspect_artifact
from modelport.runtimes.registry import REMOTE_RUNTIMES
from modelport.store import ArtifactStore
from modelport.store.tables import (
    EndpointRow,
    ModelAliasRow,
    ModelRow,
    ModelVersionRow,
    RevisionRow,
)

__all__ = [
    "create_model",
    "create_version",
    "delete_alias",
    "delete_model",
    "delete_version",
    "get_model",
    "get_version",
    "list_models",
    "model_public",
    "resolve",
    "set_alias",
    "version_public",
]


def model_public(row: ModelRow) -> ModelPublic:
    aliases = {a.alias: a.version.version for a in row.aliases}
    return ModelPublic(
        name=row.name,
        task=Task(row.task),
        description=row.description,
        owner=row.owner,
        created_at=row.created_at,
        aliases=aliases,
        versions=[version_public(v) for v in row.versions],
    )


def version_public(row: ModelVersionRow) -> VersionPublic:
    return VersionPublic(
        model=row.model.name,
        version=row.version,
        runtime=row.runtime,
        artifact_digest=row.artifact_digest,
        reference_digest=row.reference_digest,
        signature=Signature.model_validate(row.signature),
        metrics=row.metrics,
        tags=row.tags,
        runtime_options=row.runtime_options,
        aliases=sorted(a.alias for a in row.model.aliases if a.version_id == row.id),
        created_by=row.created_by,
        created_at=row.created_at,
    )


def get_model(session: Session, name: str) -> ModelRow:
    row = session.scalar(select(ModelRow).where(ModelRow.name == name))
    if row is None:
        raise NotFound(f"model '{name}' does not exist: register it first")
    return row


def list_models(session: Session) -> list[ModelRow]:
    return list(session.scalars(select(ModelRow).order_by(ModelRow.name)))


def create_model(
    session: Session, *, name: str, task: str, description: str = "", owner: str = ""
) -> ModelRow:
    check_name("model", name)
    if session.scalar(select(ModelRow.id).where(ModelRow.name == name)) is not None:
        raise Conflict(f"model '{name}' already exists: add a version to it instead", model=name)
    row = ModelRow(name=name, task=task, description=description, owner=owner)
    session.add(row)
    session.flush()
    return row


def _users(session: Session, version_ids: list[int]) -> list[str]:
    if not version_ids:
        return []
    # A revision keeps its version for as long as the endpoint exists, so that any revision
    # in the endpoint's history can still be rolled back to.
    query = (
        select(EndpointRow.name)
        .join(RevisionRow, RevisionRow.endpoint_id == EndpointRow.id)
        .where(RevisionRow.version_id.in_(version_ids))
        .distinct()
    )
    return sorted(session.scalars(query))


def delete_model(session: Session, name: str) -> None:
    row = get_model(session, name)
    users = _users(session, [v.id for v in row.versions])
    if users:
        raise Conflict(
            f"model '{name}' is in use by endpoint(s) {', '.join(users)}: delete or repoint "
            "them first",
            endpoints=users,
        )
    for alias in row.aliases:
        session.delete(alias)
    session.flush()
    for version in row.versions:
        session.delete(version)
    session.flush()
    session.delete(row)


def get_version(session: Session, model: str, version: int) -> ModelVersionRow:
    row = session.scalar(
        select(ModelVersionRow)
        .join(ModelRow)
        .where(ModelRow.name == model, ModelVersionRow.version == version)
    )
    if row is None:
        raise NotFound(f"model '{model}' has no version {version}")
    return row


def create_version(
    session: Session,
    artifacts: ArtifactStore,
    *,
    model: str,
    runtime: str,
    artifact_digest: str | None,
    signature: Signature | None = None,
    metrics: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    runtime_options: dict[str, Any] | None = None,
    reference_digest: str | None = None,
    created_by: str = "",
) -> ModelVersionRow:
    """Add the next numbered version; the runtime first proves it can read the artifact."""
    model_row = get_model(session, model)
    remote = runtime in REMOTE_RUNTIMES  # a URL: no artifact to store or inspect
    artifact_dir = Path() if remote or artifact_digest is None else artifacts.path(artifact_digest)
    if reference_digest is not None:
        artifacts.path(reference_digest)
    options = runtime_options or {}
    # User code (a pickle) loads in a short-lived process, never in the server's.
    derived = inspect_artifact(runtime, artifact_dir, options)
    if signature is None:
        signature = derived
    if not signature.inputs and not remote:
        raise InvalidRequest(
            f"could not derive the inputs of this {runtime} model: pass a signature"
        )
    last = session.scalar(
        select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model_row.id)
    )
    row = ModelVersionRow(
        model=model_row,
        version=(last or 0) + 1,
        runtime=runtime,
        artifact_digest=artifact_digest or "",
        reference_digest=reference_digest,
        signature=signature.model_dump(),
        metrics=metrics or {},
        tags=tags or {},
        runtime_options=options,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def delete_version(session: Session, model: str, version: int) -> None:
    row = get_version(session, model, version)
    users = _users(session, [row.id])
    if users:
        raise Conflict(
            f"version {version} of '{model}' is in use by endpoint(s) {', '.join(users)}: "
            "delete or repoint them first",
            endpoints=users,
        )
    for alias in list(row.model.aliases):
        if alias.version_id == row.id:
            session.delete(alias)
    session.flush()
    session.delete(row)


def set_alias(session: Session, *, model: str, alias: str, version: int) -> ModelAliasRow:
    check_name("alias", alias)
    target = get_version(session, model, version)
    row = session.scalar(
        select(ModelAliasRow).where(
            ModelAliasRow.model_id == target.model_id, ModelAliasRow.alias == alias
        )
    )
    if row is None:
        row = ModelAliasRow(model_id=target.model_id, alias=alias, version=target)
        session.add(row)
    else:
        row.version = target
    session.flush()
    return row


def delete_alias(session: Session, *, model: str, alias: str) -> None:
    model_row = get_model(session, model)
    for row in model_row.aliases:
        if row.alias == alias:
            session.delete(row)
            return
    raise NotFound(f"model '{model}' has no alias '{alias}'")


def resolve(session: Session, ref: ModelRef) -> ModelVersionRow:
    """The version a reference names right now."""
    model = get_model(session, ref.model)
    if ref.alias is not None:
        for alias in model.aliases:
            if alias.alias == ref.alias:
                return alias.version
        raise NotFound(f"model '{ref.model}' has no alias '{ref.alias}'")
    if ref.version is not None:
        return get_version(session, ref.model, ref.version)
    if not model.versions:
        raise NotFound(f"model '{ref.model}' has no versions yet: register one first")
    return model.versions[-1]
