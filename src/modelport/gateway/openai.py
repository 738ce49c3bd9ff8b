"""The OpenAI-compatible surface of the gateway: which endpoint a request names, and errors
in OpenAI's shape, so that the official ``openai`` client works unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelport.core.errors import InvalidRequest
from modelport.core.jsonbody import json_object
from modelport.core.multipart import parse_form
from modelport.core.routing import Traffic

__all__ = ["OPENAI_TASKS", "model_from_json", "model_from_multipart", "models_list"]

# Path -> tasks whose endpoints serve it.
OPENAI_TASKS: dict[str, frozenset[str]] = {
    "/v1/chat/completions": frozenset({"chat"}),
    "/v1/completions": frozenset({"chat", "completion"}),
    "/v1/embeddings": frozenset({"embedding"}),
    "/v1/audio/transcriptions": frozenset({"asr"}),
}


def model_from_json(body: bytes) -> tuple[str, dict[str, Any]]:
    """The ``model`` a JSON request names, and the parsed request."""
    payload = json_object(body)
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


def models_list(routes: Mapping[str, Traffic]) -> bytes:
    """``GET /v1/models``: every endpoint the key may call."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": traffic.primary.model}
                for name, traffic in routes.items()
            ],
        }
    )
