"""``/api/v1/endpoints/{name}/drift``: each feature's drift score against its threshold."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelport.control.deps import AdminDep, ControllerDep, PlaneDep, SessionDep
from modelport.core.errors import Unavailable

router = APIRouter(tags=["drift"])


@router.get("/endpoints/{name}/drift")
def get_drift(
    name: str, session: SessionDep, plane: PlaneDep, controller: ControllerDep, _: AdminDep
) -> dict[str, Any]:
    """The last scores of the endpoint's running revisions (inputs, predicted classes,
    lengths, latency), the thresholds, and whether a drift alert is open for each."""
    drift = controller.drift
    if drift is None:
        raise Unavailable("drift monitoring is not running on this server")
    running = set(plane.on_loop(lambda: plane.running(name)))
    return drift.report(session, name, running or None)
