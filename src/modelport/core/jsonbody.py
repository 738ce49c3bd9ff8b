"""Request bodies that must be one JSON object, parsed with one error for every protocol."""

from __future__ import annotations

from typing import Any

import orjson

from modelport.core.errors import InvalidRequest

__all__ = ["json_object"]


def json_object(body: bytes, expected: str = "a JSON object") -> dict[str, Any]:
    """The parsed object; ``InvalidRequest`` saying what is wrong otherwise."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest(f"request body must be {expected}")
    return payload
