"""The client's planning calls: environments, plans and bench profiles, comparisons and
recommendations. A mixin ``Client`` inherits."""

from __future__ import annotations

import urllib.parse
from typing import Any

from modelport.client._http import HTTPCalls

__all__ = ["PlanningCalls"]


class PlanningCalls(HTTPCalls):
    """Readiness: where an endpoint runs, on what, and whether that is still right."""

    # -- environments (part B) ----------------------------------------------------------------

    def create_environment(
        self,
        name: str,
        kind: str,
        *,
        hardware: list[str] | None = None,
        sensitivities: list[str] | None = None,
        memory_mb: int | None = None,
        cpus: int | None = None,
        backend: str = "local",
    ) -> dict[str, Any]:
        """Create an environment (admin): ``kind`` shared, dedicated or isolated; hardware
        defaults to ``["cpu"]``, sensitivities by kind; ``memory_mb`` and ``cpus`` bound
        each replica of an isolated one."""
        body: dict[str, Any] = {"name": name, "kind": kind, "backend": backend}
        body.update(
            (field, value)
            for field, value in (
                ("hardware", hardware),
                ("sensitivities", sensitivities),
                ("memory_mb", memory_mb),
                ("cpus", cpus),
            )
            if value is not None
        )
        return self._object("POST", "/api/v1/environments", json=body)

    def list_environments(self) -> list[dict[str, Any]]:
        """Every environment, with the endpoints running in each."""
        return self._list("GET", "/api/v1/environments")

    def get_environment(self, name: str) -> dict[str, Any]:
        """One environment, with the endpoints running in it."""
        return self._object("GET", f"/api/v1/environments/{_segment(name)}")

    def replace_environment(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace what an environment offers (admin); ``spec`` as for create, without name."""
        return self._object("PUT", f"/api/v1/environments/{_segment(name)}", json=spec)

    def delete_environment(self, name: str) -> dict[str, Any]:
        """Delete an environment no endpoint uses (admin)."""
        return self._object("DELETE", f"/api/v1/environments/{_segment(name)}")

    # -- plan and bench (part E) --------------------------------------------------------------

    # -- compare (part F) ---------------------------------------------------------------------

    # -- recommendations (part C) -------------------------------------------------------------


def _segment(name: str) -> str:
    # A name is one path segment: a slash or '..' in it must not reach another route.
    return urllib.parse.quote(name, safe="")
