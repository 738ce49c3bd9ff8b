"""``/api/v1/endpoints``: create, inspect and delete the stable endpoints clients call."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from modelport.control import endpoints as service
from modelport.control.deps import AdminDep, PlaneDep, SessionDep
from modelport.control.schemas import EndpointCreate, EndpointPublic
from modelport.store.tables import EndpointRow

router = APIRouter(prefix="/endpoints", tags=["endpoints"])


@router.post("", status_code=201)
async def create_endpoint(body: EndpointCreate, plane: PlaneDep, _: AdminDep) -> EndpointPublic:
    def create() -> tuple[EndpointRow, Any]:
        with plane.db.session() as session:
            row = service.create_endpoint(session, **body.model_dump())
            # Raises (and so rolls the row back) if the endpoint could not be served.
            return row, plane.prepare(row)

    row, deployment = await asyncio.to_thread(create)
    await plane.activate(row.name, deployment)
    return plane.endpoint_public(row)


@router.get("")
def list_endpoints(plane: PlaneDep, session: SessionDep, _: AdminDep) -> list[EndpointPublic]:
    return [plane.endpoint_public(row) for row in service.list_endpoints(session)]


@router.get("/{name}")
def get_endpoint(name: str, plane: PlaneDep, session: SessionDep, _: AdminDep) -> EndpointPublic:
    return plane.endpoint_public(service.get_endpoint(session, name))


@router.delete("/{name}", status_code=204)
async def delete_endpoint(name: str, plane: PlaneDep, _: AdminDep) -> Response:
    def delete() -> None:
        with plane.db.session() as session:
            service.delete_endpoint(session, name)

    await asyncio.to_thread(delete)
    await plane.undeploy(name)
    return Response(status_code=204)
