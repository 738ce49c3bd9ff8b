"""Environments: the seeded defaults, validation naming the field with nothing stored, the
planner's view, delete refused while used, and what the data-residency policy makes of
the stored kind and sensitivities. On SQLite and PostgreSQL (the ``db`` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modelport.control import environments as service
from modelport.core.errors import Conflict, InvalidRequest, ModelportError, NotFound
from modelport.core.intent import parse_intent
from modelport.governance.policy import evaluate, parse_policy
from modelport.governance.policy_context import environment_context
from modelport.planning.catalog import load_catalog
from modelport.planning.planner import EnvironmentOption
from modelport.store import Database
from modelport.store.environment_tables import EnvironmentRow
from modelport.store.tables import EndpointRow, ModelRow, ModelVersionRow

HARDWARE = load_catalog().names()
RESIDENCY = Path(__file__).parents[2] / "src/modelport/governance/policies/data-residency.yaml"


def _create(db: Database, **fields: Any) -> service.EnvironmentPublic:
    fields.setdefault("kind", "isolated")
    with db.session() as session:
        return service.create_environment(session, **fields, known_hardware=HARDWARE, actor="alice")


def _count(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(EnvironmentRow)) or 0)


def _use(db: Database, endpoint: str, environment: str | None) -> None:
    """An endpoint whose stored intent names ``environment`` (None: no intent at all)."""
    with db.session() as session:
        model = session.scalar(select(ModelRow).where(ModelRow.name == "m"))
        if model is None:
            model = ModelRow(name="m", task="tabular")
            session.add(model)
            session.flush()
            session.add(
                ModelVersionRow(
                    model_id=model.id,
                    version=1,
                    runtime="onnx",
                    artifact_digest="sha256:" + "0" * 64,
                )
            )
            session.flush()
        version = session.scalar(
            select(ModelVersionRow).where(ModelVersionRow.model_id == model.id)
        )
        assert version is not None
        intent = None if environment is None else {"endpoint": endpoint, "environment": environment}
        session.add(
            EndpointRow(name=endpoint, model_ref="m:1", version_id=version.id, intent=intent)
        )


def test_sandbox_and_production_are_seeded(db: Database) -> None:
    with db.session() as session:
        found = {e.name: e for e in service.list_environments(session)}
        options = service.list_options(session)
    assert set(found) == {"production", "sandbox"}
    assert (found["sandbox"].kind, found["sandbox"].sensitivities) == (
        "shared",
        ["public", "internal"],
    )
    assert found["production"].kind == "dedicated"
    assert found["production"].sensitivities == ["public", "internal", "confidential", "restricted"]
    assert options == (
        EnvironmentOption(
            "production",
            "dedicated",
            ("cpu",),
            ("public", "internal", "confidential", "restricted"),
        ),
        EnvironmentOption("sandbox", "shared", ("cpu",), ("public", "internal")),
    )


def test_create_show_replace_delete(db: Database) -> None:
    created = _create(db, name="vault", hardware=["cpu", "l4"], memory_mb=512, cpus=1)
    assert created.sensitivities == ["public", "internal", "confidential", "restricted"]
    with db.session() as session:
        row = service.get_environment(session, "vault")
        assert service.isolation_of(row) == {"memory_mb": 512, "cpus": 1, "network": "none"}
        assert service.isolation_of(service.get_environment(session, "sandbox")) is None
        before, after = service.replace_environment(
            session, "vault", kind="dedicated", hardware=["h100"], known_hardware=HARDWARE
        )
    assert (before.kind, before.memory_mb, after.kind, after.hardware) == (
        "isolated",
        512,
        "dedicated",
        ["h100"],
    )
    with db.session() as session:
        service.delete_environment(session, "vault")
    with db.session() as session, pytest.raises(NotFound):
        service.get_environment(session, "vault")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"name": "Bad Name"}, None),  # check_name's field is "name"
        ({"name": "auto"}, "name"),
        ({"name": "x", "kind": "cloud"}, "kind"),
        ({"name": "x", "backend": "k8s"}, "backend"),
        ({"name": "x", "hardware": ["cpu", "tpu-v9"]}, "hardware[1]"),
        ({"name": "x", "hardware": []}, "hardware"),
        ({"name": "x", "hardware": ["cpu", "cpu"]}, "hardware[1]"),
        ({"name": "x", "sensitivities": ["public", "secret"]}, "sensitivities[1]"),
        ({"name": "x", "sensitivities": []}, "sensitivities"),
        ({"name": "x", "memory_mb": 0}, "memory_mb"),
        ({"name": "x", "memory_mb": 16}, "memory_mb"),
        ({"name": "x", "cpus": True}, "cpus"),
        ({"name": "x", "kind": "shared", "memory_mb": 512}, "memory_mb"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    db: Database, fields: dict[str, Any], param: str | None
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _create(db, **fields)
    assert caught.value.status == 400
    assert caught.value.details.get("param", caught.value.details.get("field")) == (param or "name")
    assert _count(db) == 2


def test_a_taken_name_is_a_conflict(db: Database) -> None:
    with pytest.raises(Conflict):
        _create(db, name="sandbox", kind="shared")
    assert _count(db) == 2


def test_delete_is_refused_while_an_endpoint_uses_it(db: Database) -> None:
    _create(db, name="vault")
    _use(db, "fraud", "vault")
    _use(db, "legacy", None)  # no intent: it runs in sandbox
    with db.session() as session:
        assert service.users_of(session, "vault") == ["fraud"]
        assert service.users_of(session, "sandbox") == ["legacy"]
    for name in ("vault", "sandbox"):
        with pytest.raises(Conflict) as caught, db.session() as session:
            service.delete_environment(session, name)
        assert caught.value.status == 409
    assert _count(db) == 3
    with db.session() as session:
        assert [e.endpoints for e in service.list_environments(session)] == [
            [],
            ["legacy"],
            ["fraud"],
        ]


def test_an_intent_naming_a_missing_environment_is_a_400_naming_the_field(db: Database) -> None:
    intent = parse_intent("endpoint: a\ntask: tabular\nmodel: m:1\nenvironment: nowhere\n")
    with db.session() as session, pytest.raises(InvalidRequest) as caught:
        service.require_environment(session, intent)
    assert caught.value.details["param"] == "environment"
    assert "production, sandbox" in caught.value.message
    auto = parse_intent("endpoint: a\ntask: tabular\nmodel: m:1\nenvironment: auto\n")
    with db.session() as session:
        # Until apply takes the planner's choice, auto runs where trying is cheapest.
        assert service.require_environment(session, auto).name == "sandbox"


def _residency(environment: dict[str, Any], sensitivity: str) -> dict[str, str]:
    policy = parse_policy(RESIDENCY.read_text(), name="data-residency")
    intent = parse_intent(
        f"endpoint: a\ntask: tabular\nmodel: m:1\ndata: {{sensitivity: {sensitivity}}}\n"
    ).to_dict()
    context = {"intent": intent, "environment": environment}
    verdict = evaluate([policy], "apply", context)
    return {rule.rule: rule.outcome for rule in verdict.rules}


def test_data_residency_reads_the_stored_kind_and_sensitivities() -> None:
    internal_only = environment_context(
        "lab", kind="isolated", sensitivities=["internal"], sensitivity="confidential"
    )
    assert _residency(internal_only, "confidential") == {
        "sensitive-data-needs-dedicated-environment": "pass",
        "environment-accepts-the-data-sensitivity": "deny",
    }
    # A shared environment named like a dedicated one is shared: the stored kind decides.
    shared = environment_context(
        "production", kind="shared", sensitivities=["public", "confidential"], sensitivity="public"
    )
    assert _residency(shared, "public") == {
        "sensitive-data-needs-dedicated-environment": "skip",
        "environment-accepts-the-data-sensitivity": "pass",
    }
    shared = environment_context(
        "production", kind="shared", sensitivities=["confidential"], sensitivity="confidential"
    )
    assert _residency(shared, "confidential")["sensitive-data-needs-dedicated-environment"] == (
        "deny"
    )


def test_every_error_is_a_modelport_error() -> None:
    # The route maps ModelportError to its status; a bare KeyError would be a 500.
    assert issubclass(InvalidRequest, ModelportError)
