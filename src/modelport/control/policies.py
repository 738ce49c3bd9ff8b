"""Policies in force: stored (every version kept), cached in memory, checked at each stage.

``Policies.check`` never queries the database: it evaluates the cached policies, which are
read again only when one is put or disabled. An enforce-mode denial raises ``PolicyDenied``
(403); an audit-mode one is recorded in the audit log (``policy.audit_denied``) and passes.
The shipped policies (governance/policies/*.yaml) are installed, in enforce mode, the first
time a server starts with none of that name stored; disabling one keeps it disabled.

Every function here blocks (database, audit log, artifact listing): call it in a thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelport.control.audit import AuditLog
from modelport.core.errors import NotFound, ValidationFailed
from modelport.governance.identity import Actor
from modelport.governance.policy import (
    Policy,
    PolicyDenied,
    Verdict,
    artifact_format,
    evaluate,
    parse_policy,
)
from modelport.governance.policy_context import environment_context
from modelport.store import ArtifactStore, Database
from modelport.store.environment_tables import EnvironmentRow
from modelport.store.policy_tables import PolicyVersionRow, RolloutApprovalRow
from modelport.store.tables import ModelVersionRow, RolloutRow

__all__ = [
    "Policies",
    "PolicyPublic",
    "PolicyVersionPublic",
    "approvers",
    "intent_context",
    "key_context",
    "promote_context",
    "shipped_policies",
]

log = logging.getLogger("modelport.policies")

# An artifact with more files than this is named by the ones seen so far: enough to find a
# model file, and a listing never takes long.
_MAX_LISTED_FILES = 10_000


class PolicyVersionPublic(BaseModel):
    version: int
    mode: str
    enabled: bool
    created_by: str
    created_at: datetime
    text: str


class PolicyPublic(BaseModel):
    name: str
    version: int  # the newest
    mode: str
    enabled: bool
    stages: list[str]
    rules: list[str]
    description: str
    updated_by: str
    updated_at: datetime
    versions: list[PolicyVersionPublic] = []  # oldest first, only when one policy is shown


def shipped_policies() -> dict[str, str]:
    """The YAML text of each policy shipped with Modelport, by name."""
    folder = resources.files("modelport.governance") / "policies"
    return {
        entry.name.removesuffix(".yaml"): entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


class Policies:
    """The policy store and the in-memory set of policies in force."""

    def __init__(self, db: Database, artifacts: ArtifactStore, audit: AuditLog | None) -> None:
        self.db = db
        self.artifacts = artifacts
        self._audit = audit
        self._active: tuple[Policy, ...] = ()  # swapped whole, never changed in place
        self._formats: dict[str, str] = {}  # artifact digest -> format (artifacts are immutable)

    # -- in force -----------------------------------------------------------------------------

    @property
    def active(self) -> tuple[Policy, ...]:
        """The enabled policies, newest version of each."""
        return self._active

    def load(self, *, install: bool = True) -> None:
        """Install the shipped policies never stored before (``install``), then cache the
        enabled ones."""
        with self.db.session() as session:
            if install:
                stored = set(session.scalars(select(PolicyVersionRow.name).distinct()))
                for name, text in shipped_policies().items():
                    if name not in stored:
                        policy = parse_policy(text, name=name, filename=f"{name}.yaml")
                        _add_version(session, policy.name, policy.mode, text, True, "system")
                        log.info("installed policy %s (%s)", name, policy.mode)
            parsed = (_parsed(row) for row in _newest(session) if row.enabled)
            self._active = tuple(policy for policy in parsed if policy is not None)

    def check(
        self,
        stage: str,
        context: Mapping[str, Any],
        actor: Actor,
        *,
        target: str = "",
        enforce: bool = True,
    ) -> Verdict:
        """Judge ``context`` at ``stage``. Enforce-mode denials raise ``PolicyDenied``, unless
        ``enforce`` is false (the caller acts on ``verdict.approvals`` / ``denials`` itself);
        audit-mode ones are recorded in the audit log and pass."""
        verdict = evaluate(self._active, stage, context)
        audit = self._audit
        for rule in verdict.audited:
            log.warning(
                "policy %s (audit) rule %s would refuse %s of %s",
                rule.policy,
                rule.rule,
                stage,
                target,
            )
            if audit is not None:
                audit.record(
                    actor=actor,
                    action="policy.audit_denied",
                    target=target,
                    outcome="audit_denied",
                    details={"stage": stage, **rule.to_dict()},
                )
        if enforce and verdict.denials:
            raise PolicyDenied.of(verdict, verdict.denials)
        if enforce and verdict.approvals:
            raise PolicyDenied.of(verdict, verdict.approvals)
        return verdict

    def dry_run(self, stage: str, context: Mapping[str, Any]) -> Verdict:
        """Every rule's verdict, recording and raising nothing (``modelport policy test``)."""
        return evaluate(self._active, stage, context)

    # -- the store ----------------------------------------------------------------------------

    def put(self, name: str, text: str, *, actor: str) -> PolicyPublic:
        """Store ``text`` as the policy's next version (enabled) and put it in force. A policy
        that does not parse or names an unknown field raises, and nothing is stored."""
        policy = parse_policy(text, name=name, filename=f"{name}.yaml")
        with self.db.session() as session:
            row = _add_version(session, policy.name, policy.mode, text, True, actor)
            public = _public(row, policy)
        self.load(install=False)
        return public

    def disable(self, name: str, *, actor: str) -> PolicyPublic:
        """Take the policy out of force, writing a disabled version; ``put`` enables it again."""
        with self.db.session() as session:
            current = _current(session, name)
            policy = _parsed(current)
            if not current.enabled:
                return _public(current, policy)
            row = _add_version(session, name, current.mode, current.text, False, actor)
            public = _public(row, policy)
        self.load(install=False)
        return public

    def list(self) -> list[PolicyPublic]:
        """Every stored policy, enabled or not, by name."""
        with self.db.session() as session:
            return [_public(row, _parsed(row)) for row in _newest(session)]

    def show(self, name: str) -> PolicyPublic:
        """One policy with every version, oldest first."""
        with self.db.session() as session:
            current = _current(session, name)
            public = _public(current, _parsed(current))
            rows = session.scalars(
                select(PolicyVersionRow)
                .where(PolicyVersionRow.name == name)
                .order_by(PolicyVersionRow.version)
            )
            public.versions = [
                PolicyVersionPublic(
                    version=row.version,
                    mode=row.mode,
                    enabled=row.enabled,
                    created_by=row.created_by,
                    created_at=row.created_at,
                    text=row.text,
                )
                for row in rows
            ]
            return public

    # -- contexts -----------------------------------------------------------------------------

    def artifact_format(self, version: ModelVersionRow) -> str:
        """What the version's artifact is (pickle, onnx, ...), from its runtime and files."""
        digest = version.artifact_digest or ""
        known = self._formats.get(digest)
        if known is not None:
            return known
        names: list[str] = []
        if digest:
            try:
                root = self.artifacts.path(digest)
            except NotFound:
                root = None
            if root is not None:
                names = _file_names(root)
        found = artifact_format(version.runtime, names)
        if digest:
            self._formats[digest] = found
        return found


def _file_names(root: Path) -> list[str]:
    if root.is_file():
        return [root.name]
    names: list[str] = []
    for _, _, files in os.walk(root):
        names.extend(files)
        if len(names) >= _MAX_LISTED_FILES:
            break
    return names


def _newest(session: Session) -> list[PolicyVersionRow]:
    newest = (
        select(PolicyVersionRow.name, func.max(PolicyVersionRow.version).label("version"))
        .group_by(PolicyVersionRow.name)
        .subquery()
    )
    return list(
        session.scalars(
            select(PolicyVersionRow)
            .join(
                newest,
                (PolicyVersionRow.name == newest.c.name)
                & (PolicyVersionRow.version == newest.c.version),
            )
            .order_by(PolicyVersionRow.name)
        )
    )


def _current(session: Session, name: str) -> PolicyVersionRow:
    row = session.scalar(
        select(PolicyVersionRow)
        .where(PolicyVersionRow.name == name)
        .order_by(PolicyVersionRow.version.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(
            f"policy '{name}' does not exist: 'modelport policy list' shows the policies",
            field="name",
        )
    return row


def _add_version(
    session: Session, name: str, mode: str, text: str, enabled: bool, actor: str
) -> PolicyVersionRow:
    number = session.scalar(
        select(func.max(PolicyVersionRow.version)).where(PolicyVersionRow.name == name)
    )
    row = PolicyVersionRow(
        name=name,
        version=(number or 0) + 1,
        mode=mode,
        enabled=enabled,
        text=text,
        created_by=actor,
    )
    session.add(row)
    session.flush()
    return row


def _parsed(row: PolicyVersionRow) -> Policy | None:
    """The stored policy, or None if it no longer parses (a field it names was removed in an
    upgrade): it is then out of force, and says so, rather than keeping the server down."""
    try:
        policy = parse_policy(row.text, name=row.name, filename=f"{row.name}.yaml")
    except ValidationFailed as exc:
        log.error("policy %s v%d is not in force: %s", row.name, row.version, exc.message)
        return None
    return Policy(
        policy.name,
        policy.mode,
        policy.stages,
        policy.rules,
        policy.description,
        version=row.version,
        text=row.text,
    )


def _public(row: PolicyVersionRow, policy: Policy | None) -> PolicyPublic:
    return PolicyPublic(
        name=row.name,
        version=row.version,
        mode=row.mode,
        enabled=row.enabled,
        stages=sorted(policy.stages) if policy else [],
        rules=[rule.name for rule in policy.rules] if policy else [],
        description=(
            policy.description
            if policy
            else "NOT IN FORCE: it no longer parses (see the server log); put a corrected version"
        ),
        updated_by=row.created_by,
        updated_at=row.created_at,
    )


# --- what rules see ---------------------------------------------------------------------------


def _actor(actor: Actor) -> dict[str, Any]:
    return {"name": actor.name, "kind": actor.kind}


def _environment(intent: Mapping[str, Any], row: EnvironmentRow | None) -> dict[str, Any]:
    sensitivity = (intent.get("data") or {}).get("sensitivity")
    if row is None:  # not stored (a policy test): the kind its name suggests
        return environment_context(str(intent.get("environment") or "sandbox"))
    return environment_context(
        row.name, kind=row.kind, sensitivities=row.sensitivities, sensitivity=sensitivity
    )


def _version(policies: Policies, version: ModelVersionRow) -> dict[str, Any]:
    return {
        "model": version.model.name,
        "version": version.version,
        "runtime": version.runtime,
        "artifact_format": policies.artifact_format(version),
        "metrics": dict(version.metrics or {}),
        "tags": dict(version.tags or {}),
    }


def intent_context(
    policies: Policies,
    *,
    intent: Mapping[str, Any],
    version: ModelVersionRow,
    actor: Actor,
    endpoint_exists: bool,
    environment: EnvironmentRow | None = None,
) -> dict[str, Any]:
    """What rules see at ``plan`` and ``apply``: ``intent`` as ``Intent.to_dict()`` gives it,
    ``environment`` the stored one it names (None: judged by its name alone)."""
    return {
        "intent": dict(intent),
        "endpoint": {"name": intent.get("endpoint"), "exists": endpoint_exists},
        "version": _version(policies, version),
        "actor": _actor(actor),
        "environment": _environment(intent, environment),
    }


def approvers(session: Session, rollout: RolloutRow) -> list[str]:
    """Who approved the rollout's promotion, its starter never counted, in order."""
    rows = session.scalars(
        select(RolloutApprovalRow)
        .where(RolloutApprovalRow.rollout_id == rollout.id)
        .order_by(RolloutApprovalRow.id)
    )
    return [row.actor for row in rows if row.actor != rollout.created_by]


def promote_context(
    policies: Policies, session: Session, rollout: RolloutRow, actor: Actor
) -> dict[str, Any]:
    """What rules see at ``promote``: the endpoint's intent, the new revision's version, and
    the rollout with its approvals."""
    row = rollout.endpoint
    intent = dict(row.intent or {"endpoint": row.name, "environment": "sandbox"})
    target = next(r for r in row.revisions if r.number == rollout.to_revision)
    context = intent_context(
        policies,
        intent=intent,
        version=target.version,
        actor=actor,
        endpoint_exists=True,
        environment=session.scalar(
            select(EnvironmentRow).where(
                EnvironmentRow.name == str(intent.get("environment") or "sandbox")
            )
        ),
    )
    context["rollout"] = {
        "created_by": rollout.created_by,
        "approved_by": approvers(session, rollout),
        "strategy": rollout.strategy,
        "from_revision": rollout.from_revision,
        "to_revision": rollout.to_revision,
    }
    return context


def key_context(*, key: Mapping[str, Any], actor: Actor) -> dict[str, Any]:
    """What rules see at ``key_create``: the key asked for (project, name, team, scopes,
    expires_at, permissions, customers), as its JSON body has them."""
    fields = ("project", "name", "team", "scopes", "expires_at", "permissions", "customers")
    return {"key": {name: key.get(name) for name in fields}, "actor": _actor(actor)}
