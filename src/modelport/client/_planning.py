"""The client's planning calls: environments, plans and bench profiles, comparisons and
recommendations. A mixin ``Client`` inherits."""

from __future__ import annotations

from modelport.client._http import HTTPCalls

__all__ = ["PlanningCalls"]


class PlanningCalls(HTTPCalls):
    """Readiness: where an endpoint runs, on what, and whether that is still right."""

    # -- environments (part B) ----------------------------------------------------------------

    # -- plan and bench (part E) --------------------------------------------------------------

    # -- compare (part F) ---------------------------------------------------------------------

    # -- recommendations (part C) -------------------------------------------------------------
