"""The one error tree of Modelport.

Every error a user can cause is a ``ModelportError`` with a stable ``code``, an HTTP
``status`` and a message that says what was wrong and how to fix it::

    ModelportError (500, internal)
     +-- InvalidRequest (400, invalid_request)
     |    +-- ValidationFailed (422, validation_failed)
     +-- Unauthorized (401, unauthorized)
     +-- Forbidden (403, forbidden)
     +-- NotFound (404, not_found)
     +-- Conflict (409, conflict)
     +-- RequestTimeout (408, request_timeout)
     +-- PayloadTooLarge (413, payload_too_large)
     +-- TooManyRequests (429, rate_limited)
     +-- BadGateway (502, bad_gateway)
     +-- Unavailable (503, unavailable)
     +-- GatewayTimeout (504, gateway_timeout)
     +-- LoopDetected (508, loop_detected)

Transports map these to their own shapes in one place each: the control plane to
``{"error": {"code", "message", "details"}}``, the Open Inference Protocol to
``{"error": "<message>"}``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadGateway",
    "Conflict",
    "Forbidden",
    "GatewayTimeout",
    "InvalidRequest",
    "LoopDetected",
    "ModelportError",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ModelportError(Exception):
    """Base of every error Modelport raises on purpose."""

    status: int = 500
    code: str = "internal"
    #: Response headers every transport adds to the error's answer (``Retry-After``, ...).
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    def to_openai(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``, as OpenAI's API answers."""
        return {
            "error": {
                "message": self.message,
                "type": _OPENAI_TYPES.get(self.status, "server_error"),
                "param": self.details.get("param"),
                "code": self.code,
            }
        }


class InvalidRequest(ModelportError):
    status = 400
    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    status = 422
    code = "validation_failed"


class Unauthorized(ModelportError):
    status = 401
    code = "unauthorized"


class Forbidden(ModelportError):
    status = 403
    code = "forbidden"


class NotFound(ModelportError):
    status = 404
    code = "not_found"


class Conflict(ModelportError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ModelportError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(ModelportError):
    """A limit, a budget or the authentication-failure throttle refused the request; its
    ``headers`` say when to come back (``Retry-After``) and, for rate limits, OpenAI's
    ``x-ratelimit-*`` figures."""

    status = 429
    code = "rate_limited"

    def __init__(
        self, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = (), **details: Any
    ) -> None:
        super().__init__(message, **details)
        self.headers = headers


class Unavailable(ModelportError):
    status = 503
    code = "unavailable"


class RequestTimeout(ModelportError):
    """The client sent its request body too slowly."""

    status = 408
    code = "request_timeout"


class BadGateway(ModelportError):
    """An upstream broke the exchange in a way that may have done the work: not retried."""

    status = 502
    code = "bad_gateway"


class GatewayTimeout(ModelportError):
    """The request's deadline passed before an upstream answered."""

    status = 504
    code = "gateway_timeout"


class LoopDetected(ModelportError):
    """A request came back to an endpoint it already passed through."""

    status = 508
    code = "loop_detected"
