"""Endpoint service: the stable names clients call, each bound to one model version."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import registry
from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.names import check_name, parse_model_ref
from modelport.store.tables import EndpointRow

__all__ = ["create_endpoint", "delete_endpoint", "get_endpoint", "list_endpoints"]

_BATCHED_TASKS = frozenset({"tabular", "vision", "custom"})


def get_endpoint(session: Session, name: str) -> EndpointRow:
    row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
    if row is None:
        raise NotFound(f"endpoint '{name}' does not exist")
    return row


def list_endpoints(session: Session) -> list[EndpointRow]:
    return list(session.scalars(select(EndpointRow).order_by(EndpointRow.name)))


def create_endpoint(
    session: Session,
    *,
    name: str,
    model: str,
    replicas: int,
    batching: dict[str, Any] | None = None,
) -> EndpointRow:
    check_name("endpoint", name)
    ref = parse_model_ref(model)
    if session.scalar(select(EndpointRow.id).where(EndpointRow.name == name)) is not None:
        raise Conflict(f"endpoint '{name}' already exists", endpoint=name)
    version = registry.resolve(session, ref)
    if batching is not None and version.model.task not in _BATCHED_TASKS:
        raise InvalidRequest(
            f"batching applies to tabular and vision endpoints; '{ref}' is {version.model.task}",
            field="batching",
        )
    row = EndpointRow(
        name=name, model_ref=str(ref), version=version, replicas=replicas, batching=batching
    )
    session.add(row)
    session.flush()
    return row


def delete_endpoint(session: Session, name: str) -> None:
    session.delete(get_endpoint(session, name))
