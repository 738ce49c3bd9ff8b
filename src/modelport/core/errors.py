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
     +-- PayloadTooLarge (413, payload_too_large)
     +-- Unavailable (503, unavailable)

Transports map these to their own shapes in one place each: the control plane to
``{"error": {"code", "message", "details"}}``, the Open Inference Protocol to
``{"error": "<message>"}``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "ModelportError",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]


class ModelportError(Exception):
    """Base of every error Modelport raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


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


class Unavailable(ModelportError):
    status = 503
    code = "unavailable"
