"""Policies as code: YAML documents of rules, checked against what is about to happen.

A policy names the stages it applies to (``plan``, ``apply``, ``promote``, ``key_create``),
a mode (``enforce`` blocks, ``audit`` only records) and its rules::

    name: production-readiness
    mode: enforce
    stages: [plan, apply]
    rules:
      - name: production-needs-budget
        when:
          environment.name: {equals: production}
        require:
          intent.budget.monthly_usd: {exists: true}
        message: Production endpoints declare budget.monthly_usd in modelport.yaml.

A rule applies when every ``when`` condition holds; it then passes when every ``require``
condition holds, or, for an ``approval: second_person`` rule, once someone other than the
rollout's starter approved it. A condition is ``<field path>: {<operator>: <operand>}``;
``any_of: [{...}, {...}]`` holds when one of its mappings holds. There is no ``eval``: the
operators are the small set in ``OPERATORS``. Every field path is checked against
``CONTEXT_SCHEMA`` (built from the real models) when the policy is parsed, so a typo is a
422 naming its line, never a rule that silently never applies.
"""

from modelport.governance.policy_context import (
    ARTIFACT_FORMATS,
    CONTEXT_SCHEMA,
    ENVIRONMENT_KINDS,
    MODES,
    STAGES,
    ContextSchema,
    Mode,
    Stage,
    artifact_format,
    environment_kind,
)
from modelport.governance.policy_rules import (
    OPERATORS,
    Condition,
    Operator,
    Policy,
    PolicyDenied,
    Rule,
    RuleVerdict,
    Verdict,
    evaluate,
)
from modelport.governance.policy_yaml import parse_policy

__all__ = [
    "ARTIFACT_FORMATS",
    "CONTEXT_SCHEMA",
    "ENVIRONMENT_KINDS",
    "MODES",
    "OPERATORS",
    "STAGES",
    "Condition",
    "ContextSchema",
    "Mode",
    "Operator",
    "Policy",
    "PolicyDenied",
    "Rule",
    "RuleVerdict",
    "Stage",
    "Verdict",
    "artifact_format",
    "environment_kind",
    "evaluate",
    "parse_policy",
]
