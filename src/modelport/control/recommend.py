"""Recommendations: changes to an endpoint's intent that its traffic, latency and cost suggest.

What an endpoint did over the last days is read from the store (``observe``, in
``control/observed.py``): requests, errors and slow requests from the minute usage rollups,
the busiest minute as the peak, the p95 from the raw usage events (kept for the loader's
retention, 30 days by default). From that and the intent, ``propose``
(``control/proposals.py``, no I/O) sizes the endpoint again with the planner
(``planning.planner.plan``) at the *measured* peak and says, each with its reason, effect
(monthly cost delta, predicted p95) and diff on the intent:

- ``scale_to_zero``: no request at all in the window, yet replicas always run;
- ``fewer_replicas`` / ``more_replicas``: the replicas the measured peak needs (+30%
  headroom) against what the intent keeps;
- ``cheaper_hardware`` / ``faster_hardware``: another catalog type the planner prefers;
- ``enable_batching``: a tabular or vision endpoint whose peak is high, without batching;
- ``slo_never_at_risk`` / ``slo_at_risk``: the p95 far under its target, or over it.

Sizing needs what one replica sustains. In order: a ``modelport bench`` profile of the model
version on the hardware; for a chat or completion model in GGUF, the planner's estimate;
otherwise what was *observed*: one request at a time per replica at the mean model time
(``upstream_ms``), a conservative capacity (a replica may well serve several at once).
Nothing is ever applied: a proposal is a diff for the user to put in their file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import environments as environment_service
from modelport.control.benchmarking import profiles_of_version
from modelport.control.observed import (
    MAX_DAYS,
    Observed,
    check_days,
    intent_of,
    observe,
    window,
)
from modelport.control.planning import LLM_TASKS, catalog_of, llm_of, profile_of
from modelport.control.proposals import (
    BATCHING_MIN_RPS,
    SLO_MIN_REQUESTS,
    Proposal,
    Recommendation,
    propose,
)
from modelport.control.uptime import hardware_of
from modelport.core.errors import Forbidden, ModelportError, NotFound
from modelport.core.settings import Settings
from modelport.planning.catalog import Catalog
from modelport.planning.planner import EnvironmentOption
from modelport.store import ArtifactStore
from modelport.store.tables import EndpointRow

__all__ = [
    "BATCHING_MIN_RPS",
    "MAX_DAYS",
    "SLO_MIN_REQUESTS",
    "Observed",
    "Proposal",
    "Recommendation",
    "check_days",
    "endpoint_or_404",
    "intent_of",
    "observe",
    "propose",
    "recommendations",
    "window",
]


def endpoint_or_404(session: Session, name: str) -> EndpointRow:
    """The endpoint ``name``; 404 naming the ``endpoint`` parameter when there is none."""
    row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
    if row is None:
        raise NotFound(f"no endpoint named {name!r}", param="endpoint")
    return row


# --- the service ----------------------------------------------------------------------------


def recommendations(
    session: Session,
    settings: Settings,
    artifacts: ArtifactStore,
    *,
    endpoint: str | None,
    days: float,
    may_read: Callable[[EndpointRow], bool],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Proposals for ``endpoint`` (or every endpoint ``may_read`` allows) from the last
    ``days`` days. A named endpoint the caller may not read is a 403, an unknown one a 404,
    both naming ``endpoint``. Blocks (database, artifact headers): call it in a thread."""
    if endpoint is not None:
        row = endpoint_or_404(session, endpoint)
        if not may_read(row):
            raise Forbidden(f"you may not read endpoint {endpoint!r}", param="endpoint")
        rows = [row]
    else:
        rows = [r for r in session.scalars(select(EndpointRow).order_by(EndpointRow.name))]
        rows = [r for r in rows if may_read(r)]
    start, end = window(days, now)
    catalog = catalog_of(settings)
    environments = environment_service.list_options(session)
    return {
        "days": days,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "endpoints": [
            _recommend_one(session, artifacts, catalog, environments, row, start, end)
            for row in rows
        ],
    }


def _recommend_one(
    session: Session,
    artifacts: ArtifactStore,
    catalog: Catalog,
    environments: Sequence[EnvironmentOption],
    row: EndpointRow,
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    intent, described = intent_of(row)
    seen = observe(session, row.name, start, end)
    version = row.version
    profiles = {
        bench.hardware: profile_of(bench)
        for bench in profiles_of_version(session, version.model.name, version.version)
    }
    options = {**version.runtime_options, **intent.runtime_options}
    artifact_dir = None
    if version.artifact_digest and version.model.task in LLM_TASKS:
        try:
            artifact_dir = artifacts.path(version.artifact_digest)
        except ModelportError:
            artifact_dir = None
    llm = llm_of(version.model.task, artifact_dir, options)
    result = propose(
        intent,
        seen,
        catalog=catalog,
        hardware=hardware_of(row.intent),
        environments=environments,
        profiles=profiles,
        llm=llm,
    )
    notes = list(result.notes) + ([described] if described else [])
    return {
        "endpoint": row.name,
        "outcome": intent.outcome,
        "model": f"{version.model.name}:{version.version}",
        "hardware": hardware_of(row.intent),
        "observed": seen.to_dict(),
        "basis": result.basis,
        "proposals": [proposal.to_dict() for proposal in result.proposals],
        "notes": notes,
    }
