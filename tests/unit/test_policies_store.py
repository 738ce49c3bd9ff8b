"""The policy service on a real database: versions, the shipped policies, the cached check,
audit-mode denials in the real audit log; on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modelport.control.audit import AuditFilter, AuditLog
from modelport.control.policies import Policies, key_context, shipped_policies
from modelport.core.errors import NotFound, ValidationFailed
from modelport.core.settings import Settings
from modelport.governance.identity import Actor
from modelport.governance.policy import PolicyDenied
from modelport.store import ArtifactStore, Database
from modelport.store.policy_tables import PolicyVersionRow
from modelport.store.tables import ModelVersionRow

ALICE = Actor("alice", "user")

NO_UNLIMITED_KEYS = """\
name: keys-expire
mode: enforce
stages: [key_create]
rules:
  - name: keys-need-an-expiry
    require:
      key.expires_at: {exists: true}
    message: Give every key an expiry (expires_at).
"""


@pytest.fixture
def audit(db: Database, tmp_path: Path) -> AuditLog:
    return AuditLog(db, Settings(home=tmp_path / "home"))  # type: ignore[call-arg]


@pytest.fixture
def policies(db: Database, audit: AuditLog, tmp_path: Path) -> Policies:
    service = Policies(db, ArtifactStore(tmp_path / "artifacts"), audit)
    service.load()
    return service


def _versions(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(PolicyVersionRow)) or 0)


def test_shipped_policies_are_installed_once_in_enforce_mode(
    policies: Policies, db: Database
) -> None:
    listed = policies.list()
    assert [p.name for p in listed] == sorted(shipped_policies())
    assert all(p.mode == "enforce" and p.enabled and p.version == 1 for p in listed)
    assert all(p.updated_by == "system" for p in listed)
    # Disabled ones stay disabled across restarts: installing looks for the name, not "enabled".
    policies.disable("four-eyes", actor="alice")
    policies.load()
    assert _versions(db) == len(listed) + 1
    assert "four-eyes" not in {p.name for p in policies.active}


def test_every_put_is_a_new_version_and_disable_keeps_the_history(policies: Policies) -> None:
    first = policies.put("keys-expire", NO_UNLIMITED_KEYS, actor="alice")
    assert (first.version, first.enabled, first.stages) == (1, True, ["key_create"])
    second = policies.put(
        "keys-expire", NO_UNLIMITED_KEYS.replace("mode: enforce", "mode: audit"), actor="bob"
    )
    assert (second.version, second.mode) == (2, "audit")
    disabled = policies.disable("keys-expire", actor="carol")
    assert (disabled.version, disabled.enabled) == (3, False)
    assert policies.disable("keys-expire", actor="carol").version == 3  # already disabled
    shown = policies.show("keys-expire")
    assert [(v.version, v.mode, v.enabled, v.created_by) for v in shown.versions] == [
        (1, "enforce", True, "alice"),
        (2, "audit", True, "bob"),
        (3, "audit", False, "carol"),
    ]
    assert "keys-expire" not in {p.name for p in policies.active}
    again = policies.put("keys-expire", NO_UNLIMITED_KEYS, actor="alice")
    assert (again.version, again.enabled) == (4, True)


def test_a_bad_policy_stores_nothing(policies: Policies, db: Database) -> None:
    before = _versions(db)
    bad = NO_UNLIMITED_KEYS.replace("key.expires_at", "key.expiry")
    with pytest.raises(ValidationFailed) as caught:
        policies.put("keys-expire", bad, actor="alice")
    [error] = caught.value.details["errors"]
    assert error["field"] == "rules[0].require.key.expiry" and error["line"] == 7
    with pytest.raises(ValidationFailed):
        policies.put("other-name", NO_UNLIMITED_KEYS, actor="alice")  # the name must match
    assert _versions(db) == before
    with pytest.raises(NotFound):
        policies.show("keys-expire")
    with pytest.raises(NotFound):
        policies.disable("nope", actor="alice")


def _key(**fields: Any) -> dict[str, Any]:
    return key_context(key={"project": "default", "name": "k", **fields}, actor=ALICE)


def test_enforce_denies_and_audit_records(
    policies: Policies, audit: AuditLog, db: Database
) -> None:
    policies.put("keys-expire", NO_UNLIMITED_KEYS, actor="alice")
    with pytest.raises(PolicyDenied) as caught:
        policies.check("key_create", _key(), ALICE, target="project:default")
    assert caught.value.details["rule"] == "keys-need-an-expiry"
    assert "key.expires_at is missing" in caught.value.message
    assert policies.check("key_create", _key(expires_at="2030-01-01T00:00:00Z"), ALICE).allowed

    policies.put("keys-expire", NO_UNLIMITED_KEYS.replace("enforce", "audit"), actor="alice")
    verdict = policies.check("key_create", _key(), ALICE, target="project:default")
    assert verdict.allowed and [r.rule for r in verdict.audited] == ["keys-need-an-expiry"]
    with db.session() as session:
        [entry] = audit.entries(session, AuditFilter(action="policy.audit_denied"))
    assert (entry.actor, entry.target, entry.outcome) == (
        "alice",
        "project:default",
        "audit_denied",
    )
    assert entry.details["rule"] == "keys-need-an-expiry"
    assert entry.details["stage"] == "key_create"
    # A dry run records nothing.
    assert policies.dry_run("key_create", _key()).audited
    with db.session() as session:
        assert len(audit.entries(session, AuditFilter(action="policy.audit_denied"))) == 1


@pytest.mark.parametrize(
    ("runtime", "files", "expected"),
    [
        ("sklearn", ["model.joblib"], "joblib"),
        ("sklearn", ["nested/model.pkl", "README.md"], "pickle"),
        ("onnx", ["model.onnx"], "onnx"),
        ("openai-upstream", [], "remote"),
    ],
)
def test_artifact_format_reads_the_stored_artifact(
    policies: Policies, tmp_path: Path, runtime: str, files: list[str], expected: str
) -> None:
    digest = ""
    if files:
        source = tmp_path / "model"
        for name in files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(b"weights")
        digest = policies.artifacts.ingest(source).digest
    version = ModelVersionRow(runtime=runtime, artifact_digest=digest)
    assert policies.artifact_format(version) == expected


def test_a_stored_policy_that_no_longer_parses_is_out_of_force_not_fatal(
    policies: Policies, db: Database
) -> None:
    # As if an upgrade removed a field that a stored policy names.
    with db.session() as session:
        session.add(
            PolicyVersionRow(
                name="old",
                version=1,
                mode="enforce",
                enabled=True,
                text=NO_UNLIMITED_KEYS.replace("keys-expire", "old").replace("expires_at", "gone"),
                created_by="alice",
            )
        )
    policies.load()
    assert "old" not in {p.name for p in policies.active}
    [old] = [p for p in policies.list() if p.name == "old"]
    assert old.description.startswith("NOT IN FORCE") and old.rules == []
    assert policies.disable("old", actor="alice").enabled is False
