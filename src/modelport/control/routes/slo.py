"""``/api/v1/endpoints/{name}/slo``: an endpoint's error budget and burn rates, right now."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from modelport.control import alerts as alert_service
from modelport.control import slo as service
from modelport.control.deps import AdminDep, SessionDep

router = APIRouter(tags=["slo"])


@router.get("/endpoints/{name}/slo")
def get_slo(name: str, session: SessionDep, _: AdminDep) -> dict[str, Any]:
    """Budget remaining and burn rates per objective, and the endpoint's open SLO alerts.

    An endpoint without an SLO answers 200 with no objectives and a message saying how to
    set one; an endpoint that does not exist answers 404."""
    status = service.endpoint_slo(session, name, time.time())
    alerts = [
        episode.model_dump(mode="json")
        for episode in alert_service.list_episodes(session, state="open", endpoint=name)
        if episode.key.startswith(service.ALERT_PREFIX)
    ]
    return service.status_dict(status, name, alerts)
