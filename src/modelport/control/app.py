"""The control-plane FastAPI app, its one error mapping, and the guard in front of it.

The guard runs before FastAPI sees a request: it authenticates first (``control/guard.py``:
admin token, user token, OIDC token or, for usage reads, an API key), so no byte of an
unauthenticated body is read, and authorizes against ``control/access.py``'s table; then it
bounds the body in size and time as it arrives (``BoundedReceive``). A rule that needs the
body (the project of an intent, of a new key) is checked once the body is read. Small JSON
bodies are read whole there, so a slow or oversized one is answered by the guard; artifact
uploads stream through to their route under their own limits.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from modelport import __version__
from modelport.control.controller import RolloutController
from modelport.control.deps import ActorDep
from modelport.control.guard import AccessGuard, Matched
from modelport.control.plane import ControlPlane
from modelport.control.routes import (
    alerts,
    apply,
    artifacts,
    audit,
    budgets,
    compare,
    costs,
    drift,
    endpoints,
    environments,
    keys,
    limits,
    models,
    planning,
    policies,
    prices,
    projects,
    recommend,
    rollouts,
    secrets,
    slo,
    teams,
    usage,
    users,
)
from modelport.core.asgi import (
    BoundedReceive,
    Message,
    Receive,
    Scope,
    Send,
    header,
)
from modelport.core.errors import InvalidRequest, ModelportError, PayloadTooLarge

__all__ = ["ControlApp", "create_control_app"]

PREFIX = "/api/v1"
_ARTIFACTS = f"{PREFIX}/artifacts"
_CLOSE = (b"connection", b"close")


def _error(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    response = JSONResponse(body, status_code=status)
    response.raw_headers.extend(headers)
    return response


async def _modelport_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelportError)
    return _error(exc.status, exc.code, exc.message, exc.details, exc.headers)


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


_UNPARSED = "There was an error parsing the body"  # FastAPI's words when json.loads raised


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSED:
        # What json.loads cannot read without raising a JSON error: nesting past the
        # interpreter's recursion limit.
        message = "request body could not be read as JSON: it nests too deeply"
        return _error(400, "invalid_json", message)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


def create_control_app(plane: ControlPlane, controller: RolloutController) -> ControlApp:
    """The ``/api/v1`` app behind its guard. Every route requires a credential and the role
    ``control/access.py`` names for it, the schema included."""
    app = FastAPI(
        title="Modelport control plane",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.plane = plane
    app.state.controller = controller
    for module in (
        artifacts,
        models,
        endpoints,
        rollouts,
        apply,
        keys,
        limits,
        budgets,
        secrets,
        usage,
        prices,
        costs,
        slo,
        alerts,
        drift,
        policies,
        teams,
        projects,
        users,
        audit,
        environments,
        planning,
        compare,
        recommend,
    ):
        app.include_router(module.router, prefix=PREFIX)

    @app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
    def openapi(_: ActorDep) -> dict[str, Any]:
        return app.openapi()

    app.add_exception_handler(ModelportError, _modelport_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    return ControlApp(app, plane)


class ControlApp:
    """Authenticates, then bounds the request body, before the FastAPI app runs."""

    def __init__(self, app: FastAPI, plane: ControlPlane) -> None:
        self.app = app
        self.plane = plane
        self.guard = AccessGuard(app, plane)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.plane.settings
        upload = scope["path"].startswith(_ARTIFACTS)
        limit = settings.max_artifact_bytes if upload else settings.max_control_body_bytes
        matched: Matched | None = None
        try:
            if scope["path"].startswith(PREFIX):
                scope = await self.guard.authenticate(scope)
                matched = self.guard.match(scope)
                if matched is not None and not matched.rule.body:
                    await self.guard.authorize(scope, matched)
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise PayloadTooLarge(_too_large(limit, upload))
        except ModelportError as exc:
            await _refuse(send, exc)  # before reading the body: the connection is closed
            return
        if upload:
            # Streamed to disk by its route: the bound raises there, and the app's handler
            # answers it; a long upload may take its time, but not pause for long.
            bounded = BoundedReceive(
                receive,
                limit=limit,
                timeout_s=settings.artifact_upload_timeout_s,
                idle_s=settings.body_timeout_s,
                advice="raise MODELPORT_MAX_ARTIFACT_BYTES",
            )
            try:
                await self.app(scope, bounded, _closing_after(bounded, send))
            finally:
                bounded.close()  # a request refused before its body must not keep a timer
            return
        bounded = BoundedReceive(
            receive,
            limit=limit,
            timeout_s=settings.body_timeout_s,
            advice="raise MODELPORT_MAX_CONTROL_BODY_BYTES",
        )
        chunks = []
        try:
            while not bounded.done:
                message = await bounded()
                if message["type"] == "http.disconnect":
                    return  # the client left mid-body: there is no one to answer
                chunks.append(message.get("body", b""))
        except ModelportError as exc:
            await _refuse(send, exc)
            return
        body = b"".join(chunks)
        if matched is not None and matched.rule.body:
            try:  # the rule names its team from the body (an intent's project, a key's)
                await self.guard.authorize(scope, matched, body)
            except ModelportError as exc:
                await _refuse(send, exc)
                return
        await self.app(scope, _replay(body, receive), send)


def _content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidRequest("Content-Length must be a number of bytes", field="content-length")
    return int(value)


def _too_large(limit: int, upload: bool) -> str:
    setting = "MODELPORT_MAX_ARTIFACT_BYTES" if upload else "MODELPORT_MAX_CONTROL_BODY_BYTES"
    return f"request body exceeds the limit of {limit} bytes: raise {setting}"


async def _refuse(send: Send, exc: ModelportError) -> None:
    # Part of the body may be unread: closing the connection stops the client from sending
    # the rest, and a slow client from holding the connection.
    body = orjson.dumps({"error": exc.to_dict()})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        _CLOSE,
        *exc.headers,
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _closing_after(bounded: BoundedReceive, send: Send) -> Send:
    """``send`` that closes the connection when the body was refused part-way."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start" and bounded.error is not None:
            message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
        await send(message)

    return closing


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives the body already read, then passes through (disconnects)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
