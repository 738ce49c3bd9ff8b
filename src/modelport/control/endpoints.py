"""Endpoint service: the stable names clients call, and their immutable revisions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import registry
from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.intent import Intent, Routing
from modelport.core.names import check_name, parse_model_ref
from modelport.store.tables import EndpointRow, ModelVersionRow, RevisionRow

__all__ = [
    "add_revision",
    "check_batching",
    "create_endpoint",
    "delete_endpoint",
    "get_endpoint",
    "get_revision",
    "intent_of",
    "list_endpoints",
    "routing_of",
    "set_stable",
]

_BATCHED_TASKS = frozenset({"tabular", "vision", "custom"})


def get_endpoint(session: Session, name: str) -> EndpointRow:
    row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
    if row is None:
        raise NotFound(f"endpoint '{name}' does not exist")
    return row


def list_endpoints(session: Session) -> list[EndpointRow]:
    return list(session.scalars(select(EndpointRow).order_by(EndpointRow.name)))


def get_revision(session: Session, row: EndpointRow, number: int) -> RevisionRow:
    revision = session.scalar(
        select(RevisionRow).where(RevisionRow.endpoint_id == row.id, RevisionRow.number == number)
    )
    if revision is None:
        raise NotFound(f"endpoint '{row.name}' has no revision r{number}")
    return revision


def check_batching(version: ModelVersionRow, batching: dict[str, Any] | None, field: str) -> None:
    if batching is not None and version.model.task not in _BATCHED_TASKS:
        raise InvalidRequest(
            f"batching applies to tabular and vision endpoints; "
            f"'{version.model.name}' is {version.model.task}",
            field=field,
        )


def create_endpoint(
    session: Session,
    *,
    name: str,
    model: str,
    replicas: int,
    batching: dict[str, Any] | None = None,
    runtime_options: dict[str, Any] | None = None,
    intent: Intent | None = None,
    created_by: str = "",
) -> EndpointRow:
    """A new endpoint whose revision r1 takes all of its traffic."""
    check_name("endpoint", name)
    ref = parse_model_ref(model)
    if session.scalar(select(EndpointRow.id).where(EndpointRow.name == name)) is not None:
        raise Conflict(f"endpoint '{name}' already exists", endpoint=name)
    version = registry.resolve(session, ref)
    check_batching(version, batching, "batching")
    row = EndpointRow(
        name=name,
        model_ref=str(ref),
        version=version,
        replicas=replicas,
        batching=batching,
        stable_revision=1,
    )
    if intent is not None:
        row.intent = intent.to_dict()
    session.add(row)
    session.flush()
    add_revision(
        session,
        row,
        version=version,
        runtime_options=runtime_options or {},
        replicas=replicas,
        batching=batching,
        created_by=created_by,
    )
    return row


def add_revision(
    session: Session,
    row: EndpointRow,
    *,
    version: ModelVersionRow,
    runtime_options: dict[str, Any],
    replicas: int,
    batching: dict[str, Any] | None,
    created_by: str,
) -> RevisionRow:
    """The endpoint's next revision number, written once and never changed."""
    numbers = [r.number for r in row.revisions]
    revision = RevisionRow(
        endpoint=row,
        number=max(numbers, default=0) + 1,
        version=version,
        runtime_options=runtime_options,
        replicas=replicas,
        batching=batching,
        created_by=created_by,
    )
    session.add(revision)
    session.flush()
    return revision


def set_stable(row: EndpointRow, revision: RevisionRow) -> None:
    """Point the endpoint at the revision that now serves its traffic."""
    row.stable_revision = revision.number
    row.version = revision.version
    row.replicas = revision.replicas
    row.batching = revision.batching


def routing_of(row: EndpointRow) -> Routing | None:
    """The routing rules of the intent the endpoint was applied from, if any."""
    if row.intent is None:
        return None
    return Intent.model_validate(row.intent).routing


def intent_of(row: EndpointRow) -> Intent | None:
    """The intent the endpoint was applied from, if any."""
    return None if row.intent is None else Intent.model_validate(row.intent)


def delete_endpoint(session: Session, name: str) -> None:
    session.delete(get_endpoint(session, name))
