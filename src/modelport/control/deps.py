"""FastAPI dependencies: the control plane, a DB session, and the admin check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from modelport.control.controller import RolloutController
from modelport.control.plane import ControlPlane
from modelport.core.errors import Unauthorized

__all__ = ["AdminDep", "ControllerDep", "PlaneDep", "SessionDep"]


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


def _admin(request: Request, plane: Annotated[ControlPlane, Depends(_plane)]) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "missing admin token: send 'Authorization: Bearer <token>' with the token from "
            "$MODELPORT_HOME/admin-token"
        )
    if not plane.is_admin(token.strip()):
        raise Unauthorized("invalid admin token")
    return "admin"


PlaneDep = Annotated[ControlPlane, Depends(_plane)]
ControllerDep = Annotated[RolloutController, Depends(_controller)]
SessionDep = Annotated[Session, Depends(_session)]
AdminDep = Annotated[str, Depends(_admin)]
