"""``modelport plan``: what an intent would run on, what it would cost, whether policy allows
it and what it changes, before anything is deployed.

The planner itself is pure (``modelport.planning``); this module gathers what it needs from
the store: the environments, the model version (and, for a chat or completion model in GGUF,
its shape from the file's header), the version's measured profiles from ``modelport bench``.
It then judges the intent against the policies at stage ``plan`` without raising, and diffs it
against what the endpoint runs now. Nothing is stored.

Every function here blocks (database, artifact files): call it in a thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import environments as environment_service
from modelport.control import identity, registry
from modelport.control.apply import diff
from modelport.control.benchmarking import profiles_of_version
from modelport.control.policies import Policies, intent_context
from modelport.core.errors import InvalidRequest, ModelportError, NotFound, ValidationFailed
from modelport.core.intent import Intent
from modelport.core.intent_yaml import field_line
from modelport.core.names import parse_model_ref
from modelport.core.settings import Settings
from modelport.governance.identity import Actor
from modelport.planning.catalog import Catalog, load_catalog
from modelport.planning.gguf import read_llm_model
from modelport.planning.llm import LlmModel
from modelport.planning.planner import EnvironmentOption, Option, Plan, PlanInput, plan
from modelport.planning.profiles import Profile, ProfilePoint
from modelport.runtimes.base import find_model_file
from modelport.store import ArtifactStore
from modelport.store.planning_tables import BenchProfileRow
from modelport.store.tables import EndpointRow, ModelVersionRow

__all__ = [
    "LLM_TASKS",
    "catalog_of",
    "llm_of",
    "plan_input",
    "plan_intent",
    "profile_of",
]

LLM_TASKS = frozenset({"chat", "completion"})
"""Tasks sized by the LLM estimate when no profile was measured."""
AUTO = "auto"


def catalog_of(settings: Settings) -> Catalog:
    """The built-in hardware catalog plus the user's file (``MODELPORT_HARDWARE_FILE``, else
    ``$MODELPORT_HOME/hardware.yaml`` when present)."""
    extra = settings.hardware_file
    if extra is None and (settings.home / "hardware.yaml").is_file():
        extra = settings.home / "hardware.yaml"
    return load_catalog(extra)


def profile_of(row: BenchProfileRow) -> Profile:
    """A stored bench run as the planner reads it. Runs where no call succeeded are left out
    (they say nothing about latency), and so is every run at or above the lowest throughput
    where calls failed: a replica that failed calls at R rps does not sustain R, whatever a
    closed loop reached beyond it (an open loop falls behind where a closed loop slows down)."""
    failing = [float(p["rps"]) for p in row.points if p.get("errors") and p.get("rps")]
    limit = min(failing, default=math.inf)
    points = tuple(
        ProfilePoint(
            concurrency=int(point["concurrency"]),
            rps=float(point["rps"]),
            p50_ms=float(point["p50_ms"]),
            p95_ms=float(point["p95_ms"]),
            p99_ms=float(point["p99_ms"]),
            errors=int(point.get("errors", 0)),
        )
        for point in row.points
        if point.get("p95_ms") is not None
        and point.get("p50_ms") is not None
        and float(point["rps"]) < limit
    )
    return Profile(hardware=row.hardware, points=points, machine=dict(row.machine or {}))


def llm_of(task: str, artifact_dir: Path | None, options: Mapping[str, Any]) -> LlmModel | None:
    """The LLM's shape from its GGUF header, for a chat or completion model whose artifact
    holds one; None otherwise (another task, another format, or an unreadable file: the plan
    then has no estimate to make, and says so)."""
    if task not in LLM_TASKS or artifact_dir is None:
        return None
    try:
        path = find_model_file(artifact_dir, (".gguf",), dict(options))
        return read_llm_model(path)
    except (ModelportError, OSError):
        return None


def plan_input(
    intent: Intent,
    *,
    environments: Sequence[EnvironmentOption],
    llm: LlmModel | None = None,
    profiles: Mapping[str, Profile] | None = None,
) -> PlanInput:
    """What the planner reads from an intent, with the store's environments, the model's
    LLM shape and its measured profiles (hardware name -> profile)."""
    replicas = intent.resources.replicas
    return PlanInput(
        task=str(intent.task.value),
        sensitivity=intent.data.sensitivity,
        peak_rps=intent.traffic.peak_rps,
        input_tokens=intent.traffic.avg_input_tokens,
        output_tokens=intent.traffic.avg_output_tokens,
        p95_ms=intent.slo.p95_latency_ms,
        monthly_budget_usd=intent.budget.monthly_usd,
        hardware=intent.resources.hardware,
        replicas_min=replicas.min,
        replicas_max=replicas.max,
        environment=intent.environment,
        environments=tuple(environments),
        llm=llm,
        profiles=dict(profiles or {}),
    )


# --- the service ----------------------------------------------------------------------------


def _located(exc: ModelportError, text: str, filename: str) -> ModelportError:
    """``exc`` with the line of the field it names in the intent's text, when written there."""
    field = exc.details.get("field") or exc.details.get("param")
    if not isinstance(field, str) or "line" in exc.details:
        return exc
    line = field_line(text, field)
    if line is None:
        return exc
    exc.message = f"{filename} line {line}: {exc.message}"
    exc.details["line"] = line
    exc.args = (exc.message,)
    return exc


def _check_hardware(intent: Intent, catalog: Catalog) -> None:
    hardware = intent.resources.hardware
    if hardware != AUTO and hardware not in catalog:
        raise InvalidRequest(
            f"resources.hardware: unknown hardware type {hardware!r}; known types are "
            f"{', '.join(catalog.names())} or auto ('modelport hardware' lists them)",
            field="resources.hardware",
            param="resources.hardware",
        )


def _version(session: Session, intent: Intent) -> ModelVersionRow:
    try:
        version = registry.resolve(session, parse_model_ref(intent.model))
    except NotFound as exc:
        raise NotFound(f"model: {exc.message}", field="model", param="model") from None
    if version.model.task != intent.task:
        raise ValidationFailed(
            f"task: the intent says {intent.task} but model '{version.model.name}' is a "
            f"{version.model.task} model",
            field="task",
            param="task",
        )
    return version


def _environments(session: Session, intent: Intent) -> tuple[EnvironmentOption, ...]:
    if intent.environment != AUTO:
        environment_service.require_environment(session, intent)
    return environment_service.list_options(session)


def _artifact_dir(artifacts: ArtifactStore, version: ModelVersionRow) -> Path | None:
    if not version.artifact_digest:
        return None
    try:
        return artifacts.path(version.artifact_digest)
    except (NotFound, InvalidRequest):
        return None


def _option(option: Option | None) -> dict[str, Any] | None:
    return None if option is None else option.to_dict()


def _policy(
    policies: Policies,
    intent: Intent,
    chosen: Option | None,
    version: ModelVersionRow,
    actor: Actor,
    endpoint_exists: bool,
) -> dict[str, Any]:
    document = intent.to_dict()
    if intent.environment == AUTO and chosen is not None:
        # Judge where it would run: the policies' rules about environments mean the real one.
        document["environment"] = chosen.environment
    context = intent_context(
        policies, intent=document, version=version, actor=actor, endpoint_exists=endpoint_exists
    )
    verdict = policies.dry_run("plan", context)
    return {
        "allowed": verdict.allowed,
        "denials": [rule.to_dict() for rule in verdict.denials + verdict.approvals],
        "warnings": [rule.to_dict() for rule in verdict.audited],
    }


def _response(
    intent: Intent,
    version: ModelVersionRow,
    result: Plan,
    *,
    profiles: Mapping[str, BenchProfileRow],
    llm: LlmModel | None,
    policy: dict[str, Any],
    changes: list[dict[str, Any]],
    endpoint_exists: bool,
) -> dict[str, Any]:
    chosen = result.chosen
    return {
        "endpoint": intent.endpoint,
        "model": f"{version.model.name}:{version.version}",
        "task": str(intent.task.value),
        "feasible": result.feasible,
        "reason": result.reason,
        "environment": chosen.environment if chosen else None,
        "environment_reason": result.environment_reason,
        "hardware": chosen.hardware if chosen else None,
        "devices": chosen.devices if chosen else None,
        "replicas": {"min": chosen.replicas, "max": chosen.replicas_max} if chosen else None,
        "predicted_p95_ms": chosen.p95_ms if chosen else None,
        "headroom": chosen.headroom if chosen else None,
        "monthly_usd": chosen.monthly_usd if chosen else None,
        "basis": chosen.basis if chosen else None,
        "targets": {
            "peak_rps": intent.traffic.peak_rps,
            "p95_latency_ms": intent.slo.p95_latency_ms,
            "monthly_usd": intent.budget.monthly_usd,
        },
        "rejected_cheaper": [o.to_dict() for o in result.rejected_cheaper],
        "rejected_faster": [o.to_dict() for o in result.rejected_faster],
        "closest": _option(result.closest),
        "policy": policy,
        "diff": changes,
        "endpoint_exists": endpoint_exists,
        "profiles": [
            {
                "id": row.id,
                "hardware": hardware,
                "endpoint": row.endpoint,
                "revision": row.revision,
                "created_at": row.created_at.isoformat(),
                "machine": row.machine,
            }
            for hardware, row in sorted(profiles.items())
        ],
        "llm": None if llm is None else _llm_dict(llm),
    }


def _llm_dict(llm: LlmModel) -> dict[str, Any]:
    return {
        "params_b": llm.params_b,
        "bytes_per_param": llm.bytes_per_param,
        "layers": llm.layers,
        "kv_heads": llm.kv_heads,
        "head_dim": llm.head_dim,
        "context": llm.context,
    }


def plan_intent(
    *,
    session: Session,
    settings: Settings,
    artifacts: ArtifactStore,
    policies: Policies,
    intent: Intent,
    text: str,
    filename: str,
    actor: Actor,
) -> dict[str, Any]:
    """The plan of ``intent`` (parsed from ``text``): hardware, replicas, p95, cost, the
    alternatives rejected, the policy verdict at stage ``plan`` and the diff against what
    is deployed. Bad input (unknown hardware, environment, project or model) raises a 4xx
    naming the field and, where the intent writes it, its line. Stores nothing."""
    try:
        catalog = catalog_of(settings)
        _check_hardware(intent, catalog)
        try:
            identity.project_team(session, intent.project)
        except NotFound as exc:
            raise InvalidRequest(exc.message, field="project", param="project") from None
        environments = _environments(session, intent)
        version = _version(session, intent)
    except ModelportError as exc:
        raise _located(exc, text, filename) from None
    rows = {
        row.hardware: row
        for row in profiles_of_version(session, version.model.name, version.version)
    }
    profiles = {hardware: profile_of(row) for hardware, row in rows.items()}
    options = {**version.runtime_options, **intent.runtime_options}
    llm = llm_of(version.model.task, _artifact_dir(artifacts, version), options)
    result = plan(
        plan_input(intent, environments=environments, llm=llm, profiles=profiles), catalog
    )
    row = session.scalar(select(EndpointRow).where(EndpointRow.name == intent.endpoint))
    exists = row is not None
    policy = _policy(policies, intent, result.chosen, version, actor, exists)
    changes = [
        change.model_dump(mode="json")
        for change in diff(row.intent if row is not None else None, intent.to_dict())
    ]
    return _response(
        intent,
        version,
        result,
        profiles=rows,
        llm=llm,
        policy=policy,
        changes=changes,
        endpoint_exists=exists,
    )
