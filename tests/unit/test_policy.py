"""Policies as code, pure part: parsing, checking field paths, evaluating rules."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelport.core.errors import ValidationFailed
from modelport.core.intent import parse_intent
from modelport.governance.policy import (
    CONTEXT_SCHEMA,
    PolicyDenied,
    Verdict,
    artifact_format,
    environment_kind,
    evaluate,
    parse_policy,
)

SHIPPED = Path(__file__).parents[2] / "src" / "modelport" / "governance" / "policies"


def _context(intent_text: str, **version: Any) -> dict[str, Any]:
    """What the control plane builds at apply, from an intent file and a version."""
    intent = parse_intent(textwrap.dedent(intent_text)).to_dict()
    return {
        "intent": intent,
        "endpoint": {"name": intent["endpoint"], "exists": False},
        "version": {
            "model": "m",
            "version": 1,
            "runtime": "onnx",
            "artifact_format": "onnx",
            "metrics": {},
            "tags": {},
            **version,
        },
        "actor": {"name": "alice", "kind": "user"},
        "environment": {
            "name": intent["environment"],
            "kind": environment_kind(intent["environment"]),
        },
    }


PRODUCTION = """\
    endpoint: fraud
    task: tabular
    model: fraud:1
    environment: production
    data: {sensitivity: confidential}
    slo: {availability: 99.9}
    budget: {monthly_usd: 500}
"""


def _shipped(name: str) -> list[Any]:
    return [parse_policy((SHIPPED / f"{name}.yaml").read_text(), name=name)]


def _outcomes(verdict: Verdict) -> dict[str, str]:
    return {rule.rule: rule.outcome for rule in verdict.rules}


# --- every shipped policy: one context that passes, one that fails -------------------------


def test_data_residency_refuses_confidential_data_in_a_shared_environment() -> None:
    policies = _shipped("data-residency")
    shared = _context("endpoint: a\ntask: tabular\nmodel: m:1\ndata: {sensitivity: restricted}\n")
    verdict = evaluate(policies, "apply", shared)
    [denial] = verdict.denials
    assert denial.rule == "sensitive-data-needs-dedicated-environment"
    assert "environment.kind is 'shared'" in denial.reasons[0]
    assert "environment: production" in denial.message  # says how to comply
    assert evaluate(policies, "apply", _context(PRODUCTION)).allowed
    # Public data in the sandbox (what the demo and the tests use) is not concerned at all.
    sandbox = _context("endpoint: a\ntask: tabular\nmodel: m:1\n")
    assert _outcomes(evaluate(policies, "plan", sandbox)) == {
        "sensitive-data-needs-dedicated-environment": "skip",
        # Judged only for a stored environment (tests/unit/test_environments.py).
        "environment-accepts-the-data-sensitivity": "skip",
    }


def test_production_readiness_needs_an_slo_and_a_budget() -> None:
    policies = _shipped("production-readiness")
    bare = _context("endpoint: a\ntask: chat\nmodel: m:1\nenvironment: production\n")
    verdict = evaluate(policies, "apply", bare)
    assert _outcomes(verdict) == {"production-needs-slo": "deny", "production-needs-budget": "deny"}
    slo = next(r for r in verdict.rules if r.rule == "production-needs-slo")
    assert "none of the alternatives holds" in slo.reasons[0]
    assert "intent.slo.availability is missing" in slo.reasons[0]
    latency_only = _context(
        "endpoint: a\ntask: chat\nmodel: m:1\nenvironment: production\n"
        "slo: {p95_latency_ms: 200}\nbudget: {monthly_usd: 10}\n"
    )
    assert evaluate(policies, "apply", latency_only).allowed


def test_minimum_quality_needs_a_declared_metric_in_production() -> None:
    policies = _shipped("minimum-quality")
    assert not evaluate(policies, "apply", _context(PRODUCTION)).allowed  # no metrics at all
    weak = _context(PRODUCTION, metrics={"accuracy": 0.7})
    [denial] = evaluate(policies, "promote", weak).denials
    assert "version.metrics.accuracy is 0.7; it must be >= 0.8" in denial.reasons[0]
    assert evaluate(policies, "apply", _context(PRODUCTION, metrics={"f1": 0.93})).allowed
    assert not evaluate(policies, "apply", _context(PRODUCTION, metrics={"f1": "high"})).allowed


def test_pickle_based_artifacts_are_refused_in_production() -> None:
    policies = _shipped("no-pickle-in-production")
    for pickled in ("pickle", "joblib", "pytorch"):
        context = _context(PRODUCTION, runtime="sklearn", artifact_format=pickled)
        [denial] = evaluate(policies, "apply", context).denials
        assert denial.rule == "production-refuses-pickle"
        assert "ONNX" in denial.message
    assert evaluate(policies, "apply", _context(PRODUCTION)).allowed
    sandbox = _context("endpoint: a\ntask: tabular\nmodel: m:1\n", artifact_format="joblib")
    assert evaluate(policies, "apply", sandbox).allowed


def test_four_eyes_waits_for_a_second_person_in_production() -> None:
    policies = _shipped("four-eyes")
    context = _context(PRODUCTION)
    context["rollout"] = {"created_by": "alice", "approved_by": []}
    verdict = evaluate(policies, "promote", context)
    [waiting] = verdict.approvals
    assert waiting.outcome == "approval"
    assert waiting.reasons == ("needs approval by someone other than alice",)
    assert not verdict.allowed and not verdict.denials
    context["rollout"]["approved_by"] = ["bob"]
    verdict = evaluate(policies, "promote", context)
    assert verdict.allowed
    assert verdict.rules[0].reasons == ("approved by bob",)
    assert evaluate(policies, "apply", context).rules == ()  # a promote-only policy


def test_every_shipped_policy_parses_in_enforce_mode() -> None:
    names = sorted(path.stem for path in SHIPPED.glob("*.yaml"))
    assert names == [
        "data-residency",
        "four-eyes",
        "minimum-quality",
        "no-pickle-in-production",
        "production-readiness",
    ]
    for name in names:
        assert _shipped(name)[0].mode == "enforce"


# --- evaluation ---------------------------------------------------------------------------


def _one_rule(require: str, *, when: str = "", mode: str = "enforce") -> list[Any]:
    text = f"name: p\nmode: {mode}\nstages: [apply]\nrules:\n  - name: r\n    message: fix it\n"
    if when:
        text += f"    when:\n      {when}\n"
    text += f"    require:\n      {require}\n"
    return [parse_policy(text)]


@pytest.mark.parametrize(
    ("require", "holds"),
    [
        ("intent.task: {equals: tabular}", True),
        ("intent.task: {not_equals: tabular}", False),
        ("intent.task: {in: [chat, tabular]}", True),
        ("intent.task: {not_in: [chat, tabular]}", False),
        ("intent.slo.availability: {gte: 99.9}", True),
        ("intent.slo.availability: {gt: 99.9}", False),
        ("intent.slo.availability: {lte: 99.9, gte: 99}", True),
        ("intent.slo.availability: {lt: 99}", False),
        ("intent.budget.monthly_usd: {exists: true}", True),
        ("intent.traffic.peak_rps: {exists: false}", True),
        ("intent.traffic.peak_rps: {exists: true}", False),
        ("intent.consumers: {contains: 'project:web'}", True),
        ("intent.consumers: {not_contains: 'project:web'}", False),
        # A missing value fails every operator but exists: false, not_in included.
        ("intent.traffic.peak_rps: {not_in: [1, 2]}", False),
        ("version.metrics.auc: {gte: 0}", False),
        ("version.metrics.f1: {gte: 0.9}", True),  # a free-form field
        # true is not 1
        ("endpoint.exists: {equals: 0}", False),
        ("endpoint.exists: {equals: false}", True),
    ],
)
def test_operators(require: str, holds: bool) -> None:
    context = _context(PRODUCTION + "    consumers: ['project:web']\n", metrics={"f1": 0.95})
    verdict = evaluate(_one_rule(require), "apply", context)
    assert verdict.allowed is holds, verdict


def test_audit_mode_denials_do_not_block_and_are_listed_as_audited() -> None:
    policies = _one_rule("intent.task: {equals: chat}", mode="audit")
    verdict = evaluate(policies, "apply", _context(PRODUCTION))
    assert verdict.allowed
    assert [r.rule for r in verdict.audited] == ["r"]
    assert verdict.rules[0].outcome == "deny" and verdict.rules[0].mode == "audit"


def test_when_that_does_not_hold_skips_the_rule() -> None:
    policies = _one_rule("intent.task: {equals: chat}", when="environment.name: {equals: staging}")
    verdict = evaluate(policies, "apply", _context(PRODUCTION))
    assert _outcomes(verdict) == {"r": "skip"} and verdict.allowed


def test_policy_denied_names_policy_rule_and_how_to_comply() -> None:
    policies = _one_rule("intent.task: {equals: chat}")
    verdict = evaluate(policies, "apply", _context(PRODUCTION))
    error = PolicyDenied.of(verdict, verdict.denials)
    assert error.status == 403 and error.code == "policy_denied"
    assert error.details["policy"] == "p" and error.details["rule"] == "r"
    assert error.details["comply"] == "fix it"
    assert "intent.task is 'tabular'; it must be 'chat'" in error.message


# --- bad policies: 422 naming the field and the line ---------------------------------------

_RULE = "  - {name: r, message: m, require: {intent.task: {exists: true}}}\n"

BAD = [
    ("stages: [apply]\nrules: []\n", "rules", 2, "at least 1"),
    (
        "stages: [deploy]\nrules:\n" + _RULE,
        "stages[0]",
        1,
        "must be one of",
    ),
    ("mode: strict\nstages: [apply]\nrules:\n  - {name: r, message: m}\n", "mode", 1, "one of"),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      intent.slo.availabilty: {gte: 99}\n",
        "rules[0].require.intent.slo.availabilty",
        6,
        "unknown field 'intent.slo.availabilty'; known fields here: intent.slo.availability",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      owner.name: {equals: x}\n",
        "rules[0].require.owner.name",
        6,
        "a path starts with one of",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      intent.task: {like: chat}\n",
        "rules[0].require.intent.task.like",
        6,
        "unknown operator 'like'",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      intent.task: {in: [chat, tabluar]}\n",
        "rules[0].require.intent.task.in",
        6,
        "'tabluar' is not a value intent.task can take",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      intent.slo.availability: {gte: '99'}\n",
        "rules[0].require.intent.slo.availability.gte",
        6,
        "gte needs a number",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      intent.task: chat\n",
        "rules[0].require.intent.task",
        6,
        "must be a mapping of operator to value",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n"
        "      rollout.created_by: {exists: true}\n",
        "rules[0].require.rollout.created_by",
        6,
        "rollout.* is known only at stage promote",
    ),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    approval: second_person\n",
        "rules[0].approval",
        5,
        "set stages: [promote]",
    ),
    ("stages: [apply]\nrules:\n  - name: r\n    message: m\n", "rules[0]", 3, "needs require"),
    (
        "stages: [apply]\nrules:\n  - name: r\n    message: m\n    require:\n      any_of:\n"
        "        - intent.task: {equals: chat}\n",
        "rules[0].require.any_of",
        6,
        "two or more",
    ),
    (
        "stages: [apply]\nrules:\n" + _RULE + _RULE,
        "rules[1].name",
        4,
        "duplicate rule name",
    ),
    ("stages: [apply]\nstages: [plan]\nrules: []\n", "stages", 2, "duplicate key"),
    ("stages: &s [apply]\nrules: *s\n", "", 1, "anchors and aliases"),
    ("stages: [apply\n", "", 2, "not valid YAML"),
    ("- a\n- b\n", "", 1, "top level must be a mapping"),
    ("", "", 1, "empty"),
    (
        "stages: [apply]\nrules:\n  - {name: r, message: m, require: {}, extra: 1}\n",
        "rules[0].extra",
        3,
        "unknown field",
    ),
]


@pytest.mark.parametrize(("body", "field", "line", "message"), BAD)
def test_bad_policies_name_the_field_and_line(
    body: str, field: str, line: int, message: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_policy(body, name="p")
    errors = caught.value.details["errors"]
    assert caught.value.status == 422
    assert any(
        e["field"] == field and e["line"] == line and message in e["message"] for e in errors
    ), errors


def test_a_name_that_differs_from_the_url_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="is 'other' but the URL names 'p'"):
        parse_policy("name: other\nstages: [apply]\nrules:\n" + _RULE, name="p")
    with pytest.raises(ValidationFailed) as caught:
        parse_policy(
            "name: Bad Name\nstages: [key_create]\nrules:\n"
            "  - {name: r, message: m, require: {key.expires_at: {exists: true}}}\n"
        )
    assert caught.value.details["errors"][0]["field"] == "name"


def test_a_huge_policy_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(ValidationFailed, match="the limit is"):
        parse_policy("description: '" + "x" * 70_000 + "'\n", name="p")


# --- the context schema --------------------------------------------------------------------


def test_every_intent_field_is_a_known_path() -> None:
    full = parse_intent(
        textwrap.dedent(PRODUCTION)
        + "rollout: {strategy: canary, output_drift: {max_psi: 0.1}}\nbatching: {}\n"
    ).to_dict()

    def paths(value: Any, prefix: str) -> list[str]:
        if isinstance(value, dict):
            return [prefix] + [p for k, v in value.items() for p in paths(v, f"{prefix}.{k}")]
        return [prefix]

    for path in paths(full, "intent"):
        if not path.startswith("intent.runtime_options."):
            assert CONTEXT_SCHEMA.lookup(path) is not None, path
    assert CONTEXT_SCHEMA.lookup("intent.runtime_options.n_ctx") is not None  # free-form
    assert CONTEXT_SCHEMA.lookup("version.metrics.accuracy") is not None
    assert CONTEXT_SCHEMA.lookup("version.metrics.") is None
    assert CONTEXT_SCHEMA.lookup("intent.slo.nope") is None


def test_environment_kinds() -> None:
    assert environment_kind("sandbox") == "shared"
    assert environment_kind("production") == "dedicated"
    assert environment_kind("isolated") == "isolated"
    assert environment_kind("qa-7") == "shared"  # unknown names: the cautious reading


@pytest.mark.parametrize(
    ("runtime", "files", "expected"),
    [
        ("sklearn", ["model.joblib"], "joblib"),
        ("sklearn", ["sub/model.pkl"], "pickle"),
        ("onnx", ["model.onnx"], "onnx"),
        ("llama-cpp", ["m.Q4_K_M.gguf"], "gguf"),
        ("sentence-transformers", ["model.safetensors", "config.json"], "safetensors"),
        ("sentence-transformers", ["model.safetensors", "pytorch_model.bin"], "pytorch"),
        ("python", ["model.py", "weights.pkl"], "python"),
        ("openai-upstream", [], "remote"),
        ("pocketsphinx", ["mdef", "feat.params"], "unknown"),
    ],
)
def test_artifact_format(runtime: str, files: list[str], expected: str) -> None:
    assert artifact_format(runtime, files) == expected
