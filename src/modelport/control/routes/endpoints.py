"""``/api/v1/endpoints``: create, inspect and delete the stable endpoints clients call."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from modelport.control import endpoints as service
from modelport.control import identity, views
from modelport.control.access import endpoint_project
from modelport.control.deps import ActorDep, AdminDep, ControllerDep, PlaneDep, SessionDep
from modelport.control.plane import ControlPlane, Deployment
from modelport.control.schemas import EndpointCreate, EndpointPublic
from modelport.core.errors import Unavailable

router = APIRouter(prefix="/endpoints", tags=["endpoints"])

# The fields of an endpoint's view that the audit log digests (not its live state).
_STATIC_FIELDS = {
    "name",
    "model_ref",
    "model",
    "version",
    "runtime",
    "replicas",
    "batching",
    "url",
    "created_at",
    "stable_revision",
    "intent",
}


@router.post("", status_code=201)
async def create_endpoint(
    body: EndpointCreate, request: Request, plane: PlaneDep, actor: ActorDep
) -> EndpointPublic:
    """A new endpoint whose revision r1 serves all of its traffic. To roll out new versions
    under SLO gates, describe the endpoint in a modelport.yaml and ``modelport apply`` it."""

    def create() -> tuple[str, Deployment]:
        with plane.db.session() as session:
            row = service.create_endpoint(session, **body.model_dump(), created_by=actor.name)
            # Raises (and so rolls the row back) if the endpoint could not be served.
            return row.name, plane.prepare(row, row.revisions[0])

    name, deployment = await asyncio.to_thread(create)
    try:
        await plane.serve(name, deployment)
    except Exception as exc:  # undo the commit: an endpoint that does not run is not created
        await asyncio.to_thread(_delete, plane, name)
        raise Unavailable(f"endpoint '{name}' could not be started ({exc}); not created") from exc

    def created() -> EndpointPublic:
        public = _public(plane, name)
        plane.audit.change(
            request.scope,
            actor,
            action="endpoints.create",
            target=f"endpoint:{name}",
            after=_view(public),
        )
        return public

    return await asyncio.to_thread(created)


def _view(public: EndpointPublic) -> dict[str, object]:
    # What the endpoint is, without what it is doing now (replica states come and go).
    return public.model_dump(mode="json", include=_STATIC_FIELDS)


def _delete(plane: ControlPlane, name: str) -> None:
    with plane.db.session() as session:
        service.delete_endpoint(session, name)


def _public(plane: ControlPlane, name: str) -> EndpointPublic:
    with plane.db.session() as session:
        return views.endpoint_public(plane, service.get_endpoint(session, name))


@router.get("")
def list_endpoints(plane: PlaneDep, session: SessionDep, actor: ActorDep) -> list[EndpointPublic]:
    """The endpoints of the teams the caller may read (every endpoint for an admin)."""
    teams = identity.project_teams(session)
    return [
        views.endpoint_public(plane, row)
        for row in service.list_endpoints(session)
        if actor.may("read", teams.get(endpoint_project(row)))
    ]


@router.get("/{name}")
def get_endpoint(name: str, plane: PlaneDep, session: SessionDep, _: AdminDep) -> EndpointPublic:
    return views.endpoint_public(plane, service.get_endpoint(session, name))


@router.delete("/{name}", status_code=204)
async def delete_endpoint(
    name: str, request: Request, plane: PlaneDep, controller: ControllerDep, actor: ActorDep
) -> Response:
    def delete() -> dict[str, object]:
        before = _view(_public(plane, name))
        _delete(plane, name)
        return before

    before = await asyncio.to_thread(delete)
    await controller.delete(name)
    await asyncio.to_thread(
        plane.audit.change,
        request.scope,
        actor,
        action="endpoints.delete",
        target=f"endpoint:{name}",
        before=before,
    )
    return Response(status_code=204)
