"""``/api/v1/secrets``: credentials for external model servers. Values go in, never out."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.deps import AdminDep, PlaneDep

router = APIRouter(prefix="/secrets", tags=["secrets"])


class SecretSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=8192)


@router.put("/{name}", status_code=204)
def put_secret(name: str, body: SecretSet, plane: PlaneDep, _: AdminDep) -> Response:
    plane.secrets.put(name, body.value)
    return Response(status_code=204)


@router.get("")
def list_secrets(plane: PlaneDep, _: AdminDep) -> list[dict[str, str]]:
    return [{"name": name} for name in plane.secrets.names()]


@router.delete("/{name}", status_code=204)
def delete_secret(name: str, plane: PlaneDep, _: AdminDep) -> Response:
    plane.secrets.delete(name)
    return Response(status_code=204)
