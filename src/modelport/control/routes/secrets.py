"""``/api/v1/secrets``: credentials for external model servers. Values go in, never out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.deps import ActorDep, AdminDep, PlaneDep

router = APIRouter(prefix="/secrets", tags=["secrets"])


class SecretSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=8192)


@router.put("/{name}", status_code=204)
def put_secret(
    name: str, body: SecretSet, request: Request, plane: PlaneDep, actor: ActorDep
) -> Response:
    plane.secrets.put(name, body.value)
    # The name only: neither the value nor its digest (a short secret's digest can be
    # guessed back) goes in the log.
    plane.audit.change(request.scope, actor, action="secrets.put", target=f"secret:{name}")
    return Response(status_code=204)


@router.get("")
def list_secrets(plane: PlaneDep, _: AdminDep) -> list[dict[str, str]]:
    return [{"name": name} for name in plane.secrets.names()]


@router.delete("/{name}", status_code=204)
def delete_secret(name: str, request: Request, plane: PlaneDep, actor: ActorDep) -> Response:
    plane.secrets.delete(name)
    plane.audit.change(request.scope, actor, action="secrets.delete", target=f"secret:{name}")
    return Response(status_code=204)
