"""FastAPI dependencies: the control plane, a DB session, the calling actor, and the admin
check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from modelport.control.controller import RolloutController
from modelport.control.plane import ControlPlane
from modelport.core.asgi import bearer_token
from modelport.core.errors import Unauthorized
from modelport.governance.identity import Actor

__all__ = [
    "ADMIN",
    "ActorDep",
    "AdminDep",
    "ControllerDep",
    "PlaneDep",
    "SessionDep",
    "audit_change",
    "check_admin",
]

ADMIN = Actor("admin", "admin")  # the bootstrap admin: whoever holds the admin token


def _plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.plane
    return plane


def _controller(request: Request) -> RolloutController:
    controller: RolloutController = request.app.state.controller
    return controller


def _session(plane: Annotated[ControlPlane, Depends(_plane)]) -> Iterator[Session]:
    # For reads only: this teardown can run after the response is sent.
    with plane.db.session() as session:
        yield session


def check_admin(plane: ControlPlane, token: bytes | None) -> None:
    """Raise ``Unauthorized`` unless ``token`` (from ``bearer_token``) is the admin token."""
    if token is None:
        raise Unauthorized(
            "missing admin token: send 'Authorization: Bearer <token>' with the token from "
            "$MODELPORT_HOME/admin-token"
        )
    # latin-1 maps every byte to one character, as Starlette decodes headers.
    if not plane.is_admin(token.decode("latin-1")):
        raise Unauthorized("invalid admin token")


def _actor(request: Request, plane: Annotated[ControlPlane, Depends(_plane)]) -> Actor:
    # The guard in app.py authenticated and authorized the request and left its actor here.
    # Without the guard (the app mounted bare), only the admin token is accepted, so a route
    # is never open.
    state = request.scope.get("state") or {}
    actor = state.get("actor")
    if isinstance(actor, Actor):
        return actor
    check_admin(plane, bearer_token(request.scope))
    return ADMIN


def _admin(request: Request, plane: Annotated[ControlPlane, Depends(_plane)]) -> str:
    # The guard authorized the request against the access table (control/access.py); the
    # name of whoever it let in is what routes record (``created_by``).
    return _actor(request, plane).name


PlaneDep = Annotated[ControlPlane, Depends(_plane)]
ControllerDep = Annotated[RolloutController, Depends(_controller)]
SessionDep = Annotated[Session, Depends(_session)]
AdminDep = Annotated[str, Depends(_admin)]
ActorDep = Annotated[Actor, Depends(_actor)]


async def audit_change(
    plane: ControlPlane,
    request: Request,
    actor: Actor,
    *,
    action: str,
    target: str,
    before: object = None,
    after: object = None,
) -> None:
    """Append a change to the audit log (``plane.audit``), in a thread: the write blocks."""
    state = request.scope.get("state") or {}
    client = request.scope.get("client")
    await asyncio.to_thread(
        plane.audit.record,
        actor=actor,
        action=action,
        target=target,
        request_id=str(state.get("request_id", "")),
        source=client[0] if client else "",
        before=before,
        after=after,
    )
