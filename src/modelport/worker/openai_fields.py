"""Checks of single fields shared by the OpenAI request parsers.

Each raises ``InvalidRequest`` whose ``param`` names the field, so a client's mistake is a
400 that says which field is wrong; ``null`` means "not given", as in OpenAI's API.
"""

from __future__ import annotations

import re
from typing import Any

from modelport.core.errors import InvalidRequest

__all__ = ["NAME", "boolean", "fail", "integer", "json_object", "known", "number", "string"]

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""A tool's or a JSON schema's name, as OpenAI allows it."""


def fail(message: str, param: str) -> InvalidRequest:
    """The 400 to raise for ``param``."""
    return InvalidRequest(message, param=param)


def known(payload: dict[str, Any], allowed: frozenset[str], what: str, prefix: str = "") -> None:
    """Refuse any field of ``payload`` (named ``prefix + name``) that is not in ``allowed``."""
    for name in payload:
        if name not in allowed:
            raise fail(
                f"'{prefix}{name}' is not a parameter of {what}: remove it "
                f"(known: {', '.join(sorted(allowed))})",
                prefix + name,
            )


def number(payload: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    """``payload[name]`` as a number from ``low`` to ``high``, or ``default``."""
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise fail(f"'{name}' must be a number from {low:g} to {high:g}", name)
    return float(value)


def integer(payload: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    """``payload[name]`` as an integer of at least ``low`` (at most ``high``), or None."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(f"'{name}' must be an integer of at least {low}", name)
    if high is not None and value > high:
        raise fail(f"'{name}' must be an integer from {low} to {high}", name)
    return value


def boolean(payload: dict[str, Any], name: str) -> bool:
    """``payload[name]`` as true or false; absent is false."""
    value = payload.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(f"'{name}' must be true or false", name)
    return value


def string(payload: dict[str, Any], name: str, param: str) -> str | None:
    """``payload[name]`` as a string or None; ``param`` names it in the error."""
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise fail(f"'{param}' must be a string", param)
    return value


def json_object(value: Any, param: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; ``param`` names it in the error."""
    if not isinstance(value, dict):
        raise fail(f"'{param}' must be an object", param)
    return value
