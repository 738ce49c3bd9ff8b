"""What every client call shares: one ``httpx.Client`` to the server, its refusals as one
exception, and the typed ways of reading an answer."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["HTTPCalls", "ModelportClientError", "refusal"]


class ModelportClientError(Exception):
    """A request the server refused; ``status``, ``code`` and ``message`` say why."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class HTTPCalls:
    """Sends requests through ``_http`` (set by ``Client.__init__``) and turns a 4xx/5xx
    answer into ``ModelportClientError``; the base of ``Client`` and its mixins."""

    _http: httpx.Client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise refusal(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(method, path, **kwargs)
        return result

    def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(method, path, **kwargs)
        return result


def refusal(response: httpx.Response) -> ModelportClientError:
    """The server's error answer as an exception (its code, message and details)."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = response.text
    if isinstance(error, dict):
        return ModelportClientError(
            response.status_code,
            error.get("code", ""),
            error.get("message", ""),
            error.get("details"),
        )
    return ModelportClientError(response.status_code, "error", str(error))
