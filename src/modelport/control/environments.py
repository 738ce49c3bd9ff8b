"""Environments as the control plane keeps them: where endpoints run, what hardware they
offer, which data sensitivities they accept and, for isolated ones, the limits each replica
runs under.

An intent names its environment; apply refuses a name that does not exist
(:func:`require_environment`), the policies read the row's kind and sensitivities, the
planner weighs every environment (:func:`list_options`) and the backend starts an isolated
environment's replicas with :func:`isolation_of`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.intent import Intent
from modelport.core.names import check_name
from modelport.planning.planner import EnvironmentOption
from modelport.store.environment_tables import EnvironmentRow
from modelport.store.tables import EndpointRow, utcnow

__all__ = [
    "AUTO",
    "BACKENDS",
    "DEFAULT",
    "KINDS",
    "SENSITIVITIES",
    "EnvironmentPublic",
    "create_environment",
    "delete_environment",
    "environment_of",
    "get_environment",
    "isolation_of",
    "list_environments",
    "list_options",
    "public",
    "replace_environment",
    "require_environment",
    "require_hardware",
    "users_of",
]

KINDS = ("shared", "dedicated", "isolated")
SENSITIVITIES = ("public", "internal", "confidential", "restricted")
BACKENDS = ("local",)
AUTO = "auto"  # reserved: "let the planner choose", never an environment's own name
DEFAULT = "sandbox"  # where an endpoint deployed without an intent runs
_MAX_MEMORY_MB = 2**31 - 1
_MAX_CPUS = 4096


class EnvironmentPublic(BaseModel):
    """One environment as the API shows it; ``endpoints`` are those whose intent names it."""

    name: str
    kind: str
    backend: str
    hardware: list[str]
    sensitivities: list[str]
    memory_mb: int | None
    cpus: int | None
    created_by: str = ""
    created_at: datetime | None = None
    endpoints: list[str] = []


def public(row: EnvironmentRow, endpoints: Sequence[str] = ()) -> EnvironmentPublic:
    """The wire form of ``row``."""
    return EnvironmentPublic(
        name=row.name,
        kind=row.kind,
        backend=row.backend,
        hardware=list(row.hardware),
        sensitivities=list(row.sensitivities),
        memory_mb=row.memory_mb,
        cpus=row.cpus,
        created_by=row.created_by,
        created_at=row.created_at,
        endpoints=list(endpoints),
    )


# -- reads ------------------------------------------------------------------------------------


def get_environment(session: Session, name: str) -> EnvironmentRow:
    """The environment called ``name``; ``NotFound`` (404, field ``name``) naming the known ones."""
    row = session.scalar(select(EnvironmentRow).where(EnvironmentRow.name == name))
    if row is None:
        raise NotFound(
            f"environment '{name}' does not exist (known: {', '.join(_names(session)) or 'none'})",
            field="name",
        )
    return row


def require_environment(session: Session, intent: Intent) -> EnvironmentRow:
    """The environment ``intent`` names, or a 400 naming the field ``environment``.

    ``auto`` resolves to ``sandbox`` here until the planner's choice is wired into apply: an
    intent that leaves the choice open is tried where trying is cheapest.
    """
    name = DEFAULT if intent.environment == AUTO else intent.environment
    row = session.scalar(select(EnvironmentRow).where(EnvironmentRow.name == name))
    if row is None:
        raise InvalidRequest(
            f"environment '{name}' does not exist; known environments: "
            f"{', '.join(_names(session)) or 'none'} (an admin creates others with "
            "'modelport environments create')",
            field="environment",
            param="environment",
        )
    return row


def require_hardware(intent: Intent, environment: EnvironmentRow) -> None:
    """A 400 naming ``resources.hardware`` when the intent asks for a hardware type its
    environment does not offer (``auto`` leaves the choice to the planner)."""
    wanted = intent.resources.hardware
    if wanted != AUTO and wanted not in environment.hardware:
        raise InvalidRequest(
            f"hardware '{wanted}' is not offered by environment '{environment.name}' (it "
            f"offers {', '.join(environment.hardware) or 'none'}; `modelport hardware` lists "
            "the catalog, `modelport plan` chooses with hardware: auto)",
            field="resources.hardware",
            param="resources.hardware",
        )


def environment_of(session: Session, intent: dict[str, Any] | None) -> EnvironmentRow | None:
    """The environment a stored endpoint intent names (an endpoint without one runs in
    ``sandbox``); None when it no longer exists."""
    name = (intent or {}).get("environment") or DEFAULT
    if name == AUTO:
        name = DEFAULT
    return session.scalar(select(EnvironmentRow).where(EnvironmentRow.name == name))


def list_environments(session: Session) -> list[EnvironmentPublic]:
    """Every environment, by name, each with the endpoints that run in it."""
    used = _users(session)
    rows = session.scalars(select(EnvironmentRow).order_by(EnvironmentRow.name))
    return [public(row, used.get(row.name, [])) for row in rows]


def list_options(session: Session) -> tuple[EnvironmentOption, ...]:
    """Every environment as the planner weighs it, by name."""
    rows = session.scalars(select(EnvironmentRow).order_by(EnvironmentRow.name))
    return tuple(
        EnvironmentOption(
            name=row.name,
            kind=row.kind,
            hardware=tuple(row.hardware),
            sensitivities=tuple(row.sensitivities),
        )
        for row in rows
    )


def users_of(session: Session, name: str) -> list[str]:
    """The endpoints whose intent names environment ``name`` (intent-less ones: ``sandbox``)."""
    return _users(session).get(name, [])


def isolation_of(row: EnvironmentRow | None) -> dict[str, Any] | None:
    """What a replica of this environment runs under: for an isolated one its memory and CPU
    limits and no outbound network; None (no isolation) for the others."""
    if row is None or row.kind != "isolated":
        return None
    return {"memory_mb": row.memory_mb, "cpus": row.cpus, "network": "none"}


def _names(session: Session) -> list[str]:
    return list(session.scalars(select(EnvironmentRow.name).order_by(EnvironmentRow.name)))


def _users(session: Session) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    rows = session.execute(select(EndpointRow.name, EndpointRow.intent).order_by(EndpointRow.name))
    for endpoint, intent in rows:
        name = (intent or {}).get("environment") or DEFAULT
        found.setdefault(DEFAULT if name == AUTO else name, []).append(endpoint)
    return found


# -- writes -----------------------------------------------------------------------------------


def _check_fields(
    *,
    kind: str,
    backend: str,
    hardware: Sequence[str],
    sensitivities: Sequence[str],
    memory_mb: int | None,
    cpus: int | None,
    known_hardware: Collection[str],
) -> None:
    # The route's model checks types too; the service does not trust its callers.
    if kind not in KINDS:
        raise InvalidRequest(
            f"kind must be one of {', '.join(KINDS)}, not {kind!r}", field="kind", param="kind"
        )
    if backend not in BACKENDS:
        raise InvalidRequest(
            f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}",
            field="backend",
            param="backend",
        )
    if not hardware:
        raise InvalidRequest("hardware must name at least one hardware type", param="hardware")
    for i, name in enumerate(hardware):
        if name not in known_hardware:
            raise InvalidRequest(
                f"unknown hardware type {name!r}; known: {', '.join(sorted(known_hardware))} "
                "(add your own in MODELPORT_HARDWARE_FILE)",
                field=f"hardware[{i}]",
                param=f"hardware[{i}]",
            )
        if name in hardware[:i]:
            raise InvalidRequest(f"hardware {name!r} is listed twice", param=f"hardware[{i}]")
    if not sensitivities:
        raise InvalidRequest(
            "sensitivities must name at least one of " + ", ".join(SENSITIVITIES),
            param="sensitivities",
        )
    for i, sensitivity in enumerate(sensitivities):
        if sensitivity not in SENSITIVITIES:
            raise InvalidRequest(
                f"sensitivities[{i}] must be one of {', '.join(SENSITIVITIES)}, "
                f"not {sensitivity!r}",
                field=f"sensitivities[{i}]",
                param=f"sensitivities[{i}]",
            )
        if sensitivity in sensitivities[:i]:
            raise InvalidRequest(
                f"sensitivity {sensitivity!r} is listed twice", param=f"sensitivities[{i}]"
            )
    for field, value, top in (("memory_mb", memory_mb, _MAX_MEMORY_MB), ("cpus", cpus, _MAX_CPUS)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise InvalidRequest(
                f"{field} must be a positive integer (at most {top}) or null",
                field=field,
                param=field,
            )
        if kind != "isolated":
            raise InvalidRequest(
                f"{field} limits each replica of an isolated environment; "
                f"a {kind} environment takes none",
                field=field,
                param=field,
            )
    if memory_mb is not None and memory_mb < 64:
        # Below this not even the interpreter loads: every replica would fail, not one.
        raise InvalidRequest("memory_mb must be at least 64", field="memory_mb", param="memory_mb")


def _checked(
    kind: str,
    backend: str,
    hardware: Sequence[str],
    sensitivities: Sequence[str] | None,
    memory_mb: int | None,
    cpus: int | None,
    known_hardware: Collection[str],
) -> dict[str, Any]:
    """An environment's columns once every field is checked; sensitivities default by kind."""
    chosen = list(sensitivities) if sensitivities is not None else _default_sensitivities(kind)
    _check_fields(
        kind=kind,
        backend=backend,
        hardware=list(hardware),
        sensitivities=chosen,
        memory_mb=memory_mb,
        cpus=cpus,
        known_hardware=known_hardware,
    )
    return {
        "kind": kind,
        "backend": backend,
        "hardware": list(hardware),
        "sensitivities": chosen,
        "memory_mb": memory_mb,
        "cpus": cpus,
    }


def create_environment(
    session: Session,
    *,
    name: str,
    kind: str,
    backend: str = "local",
    hardware: Sequence[str] = ("cpu",),
    sensitivities: Sequence[str] | None = None,
    memory_mb: int | None = None,
    cpus: int | None = None,
    known_hardware: Collection[str],
    actor: str,
) -> EnvironmentPublic:
    """Create an environment. Sensitivities default by kind: a shared one takes public and
    internal data, the others every sensitivity. 409 if the name is taken."""
    check_name("environment", name)
    if name == AUTO:
        raise InvalidRequest(
            f"'{AUTO}' is reserved: an intent says 'environment: auto' to let the planner choose",
            field="name",
            param="name",
        )
    values = _checked(kind, backend, hardware, sensitivities, memory_mb, cpus, known_hardware)
    if session.scalar(select(EnvironmentRow.id).where(EnvironmentRow.name == name)) is not None:
        raise Conflict(f"environment '{name}' already exists", field="name")
    row = EnvironmentRow(name=name, **values, created_by=actor[:128], created_at=utcnow())
    session.add(row)
    session.flush()
    return public(row)


def replace_environment(
    session: Session,
    name: str,
    *,
    kind: str,
    backend: str = "local",
    hardware: Sequence[str] = ("cpu",),
    sensitivities: Sequence[str] | None = None,
    memory_mb: int | None = None,
    cpus: int | None = None,
    known_hardware: Collection[str],
) -> tuple[EnvironmentPublic, EnvironmentPublic]:
    """Replace what an environment offers; (before, after). Running replicas keep what they
    started with; the next apply or restart of an endpoint in it uses the new values."""
    row = get_environment(session, name)
    values = _checked(kind, backend, hardware, sensitivities, memory_mb, cpus, known_hardware)
    users = users_of(session, name)
    before = public(row, users)
    for field, value in values.items():
        setattr(row, field, value)
    session.flush()
    return before, public(row, users)


def delete_environment(session: Session, name: str) -> EnvironmentPublic:
    """Delete an environment no endpoint uses (409 naming them otherwise); what it was."""
    row = get_environment(session, name)
    users = users_of(session, name)
    if users:
        raise Conflict(
            f"environment '{name}' is used by endpoint(s) {', '.join(users)}: move or delete "
            "them first",
            field="name",
            endpoints=users,
        )
    before = public(row)
    session.delete(row)
    return before


def _default_sensitivities(kind: str) -> list[str]:
    return ["public", "internal"] if kind == "shared" else list(SENSITIVITIES)
