"""Apply an intent file: create the endpoint, or work out what changed and act on it.

What a revision runs (model version, runtime options, replicas, batching) changing means a new
immutable revision and a rollout; anything else (SLO, routing, budget, ...) is stored and takes
effect at once. The same file applied twice changes nothing. A dry run (``modelport diff``)
goes through the same code and writes nothing. Policies are checked first (stage ``plan`` for
a dry run, ``apply`` otherwise), before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import endpoints as endpoint_service
from modelport.control import identity, registry
from modelport.control import rollouts as rollout_service
from modelport.control.environments import (
    environment_of,
    isolation_of,
    require_environment,
    require_hardware,
)
from modelport.control.policies import Policies, intent_context
from modelport.control.schemas import Change
from modelport.core.errors import Conflict, InvalidRequest, NotFound, ValidationFailed
from modelport.core.intent import Intent, intent_digest
from modelport.core.names import parse_model_ref
from modelport.governance.identity import Actor
from modelport.store.tables import EndpointRow, ModelVersionRow, RevisionRow, RolloutRow

__all__ = ["Applied", "apply_intent", "diff"]


@dataclass(slots=True)
class Applied:
    action: str  # created | rollout | updated | unchanged
    changes: list[Change]
    endpoint: EndpointRow | None = None
    revision: RevisionRow | None = None  # created (or, in a dry run, its would-be number)
    revision_number: int | None = None
    rollout: RolloutRow | None = None
    summary: str = ""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Change]:
    """Field-by-field changes between two intents, in dotted paths."""
    old, new = _flatten(before or {}), _flatten(after)
    return [
        Change(field=key, before=old.get(key), after=new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _config(intent: Intent, version: ModelVersionRow) -> dict[str, Any]:
    return {
        "version_id": version.id,
        "runtime_options": dict(intent.runtime_options),
        # A revision starts with at least one replica even when min is 0: scaling to zero
        # happens later, after resources.autoscaling.idle_to_zero_after without a request.
        "replicas": max(intent.resources.replicas.min, 1),
        "batching": intent.batching.model_dump() if intent.batching is not None else None,
    }


def _config_of(revision: RevisionRow) -> dict[str, Any]:
    return {
        "version_id": revision.version_id,
        "runtime_options": revision.runtime_options,
        "replicas": revision.replicas,
        "batching": revision.batching,
    }


def _resolve(session: Session, intent: Intent) -> ModelVersionRow:
    ref = parse_model_ref(intent.model)
    try:
        version = registry.resolve(session, ref)
    except NotFound as exc:
        raise NotFound(f"model: {exc.message}", field="model") from exc
    if version.model.task != intent.task:
        raise ValidationFailed(
            f"task: the intent says {intent.task} but model '{version.model.name}' is a "
            f"{version.model.task} model",
            field="task",
        )
    batching = intent.batching.model_dump() if intent.batching is not None else None
    endpoint_service.check_batching(version, batching, "batching")
    return version


def _check_project(session: Session, project: str) -> None:
    # An endpoint belongs to its project's team: a project nobody created has no team.
    try:
        identity.project_team(session, project)
    except NotFound as exc:
        raise InvalidRequest(exc.message, field="project", param="project") from None


def apply_intent(
    session: Session,
    intent: Intent,
    *,
    dry_run: bool,
    actor: Actor,
    policies: Policies | None = None,
) -> Applied:
    """Validate an intent against the registry and ``policies`` and apply it (or, dry, say
    what would change). An enforced policy that denies raises ``PolicyDenied`` (403)."""
    _check_project(session, intent.project)
    version = _resolve(session, intent)
    environment = require_environment(session, intent)
    require_hardware(intent, environment)
    config = _config(intent, version)
    document = intent.to_dict()
    row = session.scalar(select(EndpointRow).where(EndpointRow.name == intent.endpoint))
    if policies is not None:
        context = intent_context(
            policies,
            intent=document,
            version=version,
            actor=actor,
            endpoint_exists=row is not None,
            environment=environment,
        )
        stage = "plan" if dry_run else "apply"
        policies.check(stage, context, actor, target=f"endpoint:{intent.endpoint}")
    if row is None:
        applied = Applied("created", diff(None, document), revision_number=1)
        applied.summary = (
            f"create endpoint '{intent.endpoint}' with revision r1 "
            f"({version.model.name}:{version.version})"
        )
        if dry_run:
            return applied
        applied.endpoint = endpoint_service.create_endpoint(
            session,
            name=intent.endpoint,
            model=intent.model,
            replicas=config["replicas"],
            batching=config["batching"],
            runtime_options=config["runtime_options"],
            intent=intent,
            created_by=actor.name,
        )
        applied.endpoint.intent_digest = intent_digest(intent)
        applied.revision = applied.endpoint.revisions[0]
        return applied

    changes = diff(row.intent, document)
    newest = row.revisions[-1]
    # Compare with what serves (or is being rolled out): applying a file makes the endpoint
    # run what it says, so re-applying one whose rollout was rolled back tries it again.
    active = rollout_service.active_rollout(session, row)
    current = endpoint_service.get_revision(
        session, row, active.to_revision if active is not None else row.stable_revision
    )
    # A move in or out of an isolation its replicas start under needs new replicas: a new
    # revision, rolled out like any other.
    moved = isolation_of(environment_of(session, row.intent)) != isolation_of(environment)
    new_revision = config != _config_of(current) or moved
    if new_revision and current.version_id != version.id:
        before = f"{current.version.model.name}:{current.version.version}"
        after = f"{version.model.name}:{version.version}"
        changes = [c for c in changes if c.field != "model"]
        changes.insert(0, Change(field="model", before=before, after=after))
    if not changes and not new_revision:
        return Applied("unchanged", [], row, summary=f"endpoint '{row.name}' is up to date")
    if not new_revision:
        applied = Applied("updated", changes, row)
        applied.summary = f"update endpoint '{row.name}' ({len(changes)} field(s)); no new revision"
        if not dry_run:
            _store(row, intent, document)
        return applied

    if active is not None:
        raise Conflict(
            f"endpoint '{row.name}' has a rollout in progress (r{active.from_revision} -> "
            f"r{active.to_revision}, {active.state}): promote, roll back or abort it before "
            "applying a new revision",
            state=active.state,
        )
    number = newest.number + 1
    plan = rollout_service.plan_of(intent)
    applied = Applied("rollout", changes, row, revision_number=number)
    applied.summary = (
        f"new revision r{number} ({version.model.name}:{version.version}); roll out from "
        f"r{row.stable_revision} by {_describe(plan)}"
    )
    if dry_run:
        return applied
    applied.revision = endpoint_service.add_revision(
        session,
        row,
        version=version,
        runtime_options=config["runtime_options"],
        replicas=config["replicas"],
        batching=config["batching"],
        created_by=actor.name,
    )
    applied.rollout = rollout_service.create_rollout(
        session,
        row,
        from_revision=row.stable_revision,
        to_revision=number,
        plan=plan,
        created_by=actor.name,
    )
    _store(row, intent, document)
    return applied


def _store(row: EndpointRow, intent: Intent, document: dict[str, Any]) -> None:
    row.intent = document
    row.intent_digest = intent_digest(intent)
    row.model_ref = intent.model


def _describe(plan: dict[str, Any]) -> str:
    strategy = plan["strategy"]
    if strategy == "canary":
        steps = " -> ".join(f"{step}%" for step in plan["steps"])
        return f"canary ({steps}, {plan['interval_s']:g} s each)"
    if strategy == "shadow":
        return f"shadow ({plan['shadow_sample']:.0%} mirrored for {plan['interval_s']:g} s)"
    if strategy == "blue-green":
        return (
            f"blue-green (judged {plan['interval_s']:g} s, old kept {plan['keep_previous_s']:g} s)"
        )
    return "immediate switch once warm"
