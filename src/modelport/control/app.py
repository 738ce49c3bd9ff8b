"""The control-plane FastAPI app and its one error mapping."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from modelport import __version__
from modelport.control.controller import RolloutController
from modelport.control.deps import AdminDep
from modelport.control.plane import ControlPlane
from modelport.control.routes import (
    apply,
    artifacts,
    endpoints,
    keys,
    models,
    rollouts,
    secrets,
    usage,
)
from modelport.core.errors import ModelportError

__all__ = ["create_control_app"]

PREFIX = "/api/v1"


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status)


async def _modelport_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelportError)
    return _error(exc.status, exc.code, exc.message, exc.details)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "problem": e["msg"]}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return _error(400, "invalid_json", "request body is not valid JSON", {"errors": errors})
    summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
    return _error(422, "validation_failed", f"invalid request: {summary}", {"errors": errors})


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    # A concurrent request won a uniqueness race that the services' own checks could not see.
    return _error(409, "conflict", "a concurrent change conflicted with this one: retry it")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


def create_control_app(plane: ControlPlane, controller: RolloutController) -> FastAPI:
    """The ``/api/v1`` app. Every route requires the admin token, the schema included."""
    app = FastAPI(
        title="Modelport control plane",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.plane = plane
    app.state.controller = controller
    for module in (artifacts, models, endpoints, rollouts, apply, keys, secrets, usage):
        app.include_router(module.router, prefix=PREFIX)

    @app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
    def openapi(_: AdminDep) -> dict[str, Any]:
        return app.openapi()

    app.add_exception_handler(ModelportError, _modelport_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    return app
