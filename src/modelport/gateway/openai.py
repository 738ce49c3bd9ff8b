"""The OpenAI-compatible surface of the gateway: which endpoint a request names, and errors
in OpenAI's shape, so that the official ``openai`` client works unchanged."""

from __future__ import annotations

from typing import Any

import orjson

from modelport.core.errors import InvalidRequest, ModelportError
from modelport.core.multipart import parse_form

__all__ = ["OPENAI_TASKS", "error_body", "model_from_json", "model_from_multipart", "models_list"]

# Path -> tasks whose endpoints serve it.
OPENAI_TASKS: dict[str, frozenset[str]] = {
    "/v1/chat/completions": frozenset({"chat"}),
    "/v1/completions": frozenset({"chat", "completion"}),
    "/v1/embeddings": frozenset({"embedding"}),
    "/v1/audio/transcriptions": frozenset({"asr"}),
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(error: ModelportError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI answers."""
    return {
        "error": {
            "message": error.message,
            "type": _ERROR_TYPES.get(error.status, "server_error"),
            "param": error.details.get("param"),
            "code": error.code,
        }
    }


def model_from_json(body: bytes) -> tuple[str, dict[str, Any]]:
    """The ``model`` a JSON request names, and the parsed request."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: name the endpoint to call", param="model")
    return model, payload


def model_from_multipart(body: bytes, content_type: bytes) -> str:
    """The ``model`` form field of a multipart request."""
    field = parse_form(body, content_type).get("model")
    if field is None or not field.data:
        raise InvalidRequest("'model' is required: name the endpoint to call", param="model")
    return field.text


def models_list(routes: Any) -> bytes:
    """``GET /v1/models``: every endpoint the key may call."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": route.model}
                for name, route in routes.items()
            ],
        }
    )
