"""The client's planning calls: environments, plans and bench profiles, comparisons and
recommendations. A mixin ``Client`` inherits."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from modelport.client._http import HTTPCalls

__all__ = ["PlanningCalls"]

_BENCH_TIMEOUT_S = 120.0


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

    def plan(self, intent: str | Path, *, filename: str | None = None) -> dict[str, Any]:
        """What a ``modelport.yaml`` (its text, or a path to it) would run on and cost, the
        alternatives rejected, the policy verdict and the diff against what is deployed."""
        if isinstance(intent, Path):
            filename, intent = filename or intent.name, intent.read_text()
        body = {"intent": intent, "filename": filename or "modelport.yaml"}
        return self._object("POST", "/api/v1/plan", json=body)

    def bench(
        self,
        endpoint: str,
        *,
        revision: str | None = None,
        concurrency: list[int] | None = None,
        duration: float | str | None = None,
        rate: float | None = None,
        open_loop: list[float] | None = None,
    ) -> dict[str, Any]:
        """Measure a revision's replicas at each concurrency (callers per replica) for
        ``duration`` each (seconds, or "3s"), then open-loop at ``open_loop`` shares of the
        top throughput (default 0.4, 0.55, 0.7), and store the profile; takes up to a
        minute. With ``rate`` instead: one open-loop run at that many requests per second
        per replica (to check a plan's predicted p95), not stored."""
        body: dict[str, Any] = {}
        if open_loop is not None:
            body["open_loop"] = open_loop
        if rate is not None:
            body["rate"] = rate
        if revision is not None:
            body["revision"] = revision
        if concurrency is not None:
            body["concurrency"] = concurrency
        if duration is not None:
            body["duration"] = duration
        path = f"/api/v1/endpoints/{_segment(endpoint)}/bench"
        # The server bounds a bench to 60 s; the default 60 s client timeout would cut it.
        return self._object("POST", path, json=body, timeout=_BENCH_TIMEOUT_S)

    def profiles(self, endpoint: str) -> list[dict[str, Any]]:
        """The endpoint's stored bench profiles, newest first."""
        return self._list("GET", f"/api/v1/endpoints/{_segment(endpoint)}/profiles")

    def hardware(self) -> list[dict[str, Any]]:
        """The hardware catalog (built-in and the installation's own), with sources."""
        return self._list("GET", "/api/v1/hardware")

    # -- compare (part F) ---------------------------------------------------------------------

    def compare(
        self,
        intent: str,
        candidates: list[str],
        eval_text: str,
        *,
        eval_format: str = "csv",
        filename: str = "modelport.yaml",
        duration_s: float | None = None,
        concurrency: int | None = None,
        timeout: float = 900.0,
    ) -> dict[str, Any]:
        """Score candidates (``NAME:V`` / ``NAME@ALIAS``) on an evaluation set against an
        intent, side by side; the stored comparison, ranked. Runs each candidate's replica in
        turn, so it can take minutes: ``timeout`` bounds the wait."""
        body: dict[str, Any] = {
            "intent": intent,
            "filename": filename,
            "candidates": candidates,
            "eval": {"format": eval_format, "text": eval_text},
        }
        if duration_s is not None:
            body["duration_s"] = duration_s
        if concurrency is not None:
            body["concurrency"] = concurrency
        return self._object("POST", "/api/v1/compare", json=body, timeout=timeout)

    def comparisons(self, endpoint: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """An endpoint's stored comparisons, newest first."""
        name = urllib.parse.quote(endpoint, safe="")
        return self._list("GET", f"/api/v1/endpoints/{name}/comparisons", params={"limit": limit})

    # -- recommendations (part C) -------------------------------------------------------------

    def recommendations(
        self, endpoint: str | None = None, *, days: float | None = None
    ) -> dict[str, Any]:
        """Proposed changes to the intent of ``endpoint`` (default: every endpoint the caller
        may read) from the last ``days`` days (7): ``{days, since, until, endpoints: [{endpoint,
        observed, basis, proposals: [{kind, reason, effect, diff}], notes}]}``."""
        params: dict[str, Any] = {}
        if endpoint is not None:
            params["endpoint"] = endpoint
        if days is not None:
            params["days"] = days
        return self._object("GET", "/api/v1/recommendations", params=params)


def _segment(name: str) -> str:
    # A name is one path segment: a slash or '..' in it must not reach another route.
    return urllib.parse.quote(name, safe="")
