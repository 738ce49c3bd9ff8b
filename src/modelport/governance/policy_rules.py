"""Rules and their evaluation: operators (the plugin interface), conditions, verdicts.

A missing (or null) field satisfies only ``exists: false``; every other operator fails on
it, so a rule never passes by accident because a value was left out.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from modelport.core.errors import Forbidden
from modelport.core.intent_yaml import show
from modelport.governance.policy_context import Mode

__all__ = [
    "OPERATORS",
    "AnyOf",
    "Clause",
    "Condition",
    "Operator",
    "Policy",
    "PolicyDenied",
    "Rule",
    "RuleVerdict",
    "Verdict",
    "evaluate",
]

# --- operators (the plugin interface of rule evaluation) -------------------------------------


class Operator(Protocol):
    """One comparison a condition may use. ``check`` vets the operand when the policy is
    parsed (a message, or ``None`` when fine); ``holds`` compares a present value with it."""

    def check(self, operand: Any) -> str | None: ...

    def holds(self, value: Any, operand: Any) -> bool: ...


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same(value: Any, operand: Any) -> bool:
    # true is not 1, as YAML's author meant it.
    if isinstance(value, bool) or isinstance(operand, bool):
        return value is operand
    return bool(value == operand)


class _Equals:
    def check(self, operand: Any) -> str | None:
        return None if _is_scalar(operand) else f"needs a single value, got {show(operand)}"

    def holds(self, value: Any, operand: Any) -> bool:
        return _same(value, operand)


class _NotEquals(_Equals):
    def holds(self, value: Any, operand: Any) -> bool:
        return not super().holds(value, operand)


class _In:
    def check(self, operand: Any) -> str | None:
        if isinstance(operand, list) and operand and all(_is_scalar(v) for v in operand):
            return None
        return f"needs a non-empty list of values, got {show(operand)}"

    def holds(self, value: Any, operand: Any) -> bool:
        return any(_same(value, item) for item in operand)


class _NotIn(_In):
    def holds(self, value: Any, operand: Any) -> bool:
        return not super().holds(value, operand)


class _Contains(_Equals):
    """A list value (``intent.consumers``, ``key.permissions``) holds the operand."""

    def holds(self, value: Any, operand: Any) -> bool:
        return isinstance(value, list | tuple) and any(_same(item, operand) for item in value)


class _NotContains(_Contains):
    def holds(self, value: Any, operand: Any) -> bool:
        return isinstance(value, list | tuple) and not super().holds(value, operand)


class _Compare:
    def __init__(self, compare: typing.Callable[[float, float], bool]) -> None:
        self._compare = compare

    def check(self, operand: Any) -> str | None:
        return None if _is_number(operand) else f"needs a number, got {show(operand)}"

    def holds(self, value: Any, operand: Any) -> bool:
        return _is_number(value) and self._compare(value, operand)


OPERATORS: dict[str, Operator] = {
    "equals": _Equals(),
    "not_equals": _NotEquals(),
    "in": _In(),
    "not_in": _NotIn(),
    "contains": _Contains(),
    "not_contains": _NotContains(),
    "gte": _Compare(lambda a, b: a >= b),
    "lte": _Compare(lambda a, b: a <= b),
    "gt": _Compare(lambda a, b: a > b),
    "lt": _Compare(lambda a, b: a < b),
}
"""Every operator a condition may use, besides ``exists: true|false``."""
_SIGNS = {"gte": ">=", "lte": "<=", "gt": ">", "lt": "<"}


# --- the parsed policy -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """``path`` compared by ``op`` with ``operand``. A missing (or null) value satisfies only
    ``exists: false``: every other operator fails on it."""

    path: str
    op: str
    operand: Any

    def problem(self, context: Mapping[str, Any]) -> str | None:
        """Why the condition does not hold in ``context``, or ``None`` when it does."""
        value = _get(context, self.path)
        if self.op == "exists":
            present = value is not None
            if present == bool(self.operand):
                return None
            return f"{self.path} is {'missing' if not present else show(value)}" + (
                "" if present else " and must be set"
            )
        if value is None:
            return f"{self.path} is missing"
        if OPERATORS[self.op].holds(value, self.operand):
            return None
        return f"{self.path} is {show(value)}; it must be {self._wanted()}"

    def _wanted(self) -> str:
        if self.op == "equals":
            return show(self.operand)
        if self.op == "not_equals":
            return f"other than {show(self.operand)}"
        if self.op in ("contains", "not_contains"):
            return f"a list {'with' if self.op == 'contains' else 'without'} {show(self.operand)}"
        if self.op in ("in", "not_in"):
            listed = ", ".join(show(v) for v in self.operand)
            return f"{'one' if self.op == 'in' else 'none'} of [{listed}]"
        return f"{_SIGNS[self.op]} {show(self.operand)}"


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Holds when every condition of one of its groups holds."""

    groups: tuple[tuple[Condition, ...], ...]

    def problem(self, context: Mapping[str, Any]) -> str | None:
        """Why no group holds (each group's first failure), or ``None`` when one does."""
        misses = []
        for group in self.groups:
            miss = _first_problem(group, context)
            if miss is None:
                return None
            misses.append(miss)
        return "none of the alternatives holds: " + "; or ".join(misses)


Clause = Condition | AnyOf


def _first_problem(clauses: Sequence[Clause], context: Mapping[str, Any]) -> str | None:
    return next((p for c in clauses if (p := c.problem(context)) is not None), None)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    message: str  # how to comply
    when: tuple[Clause, ...] = ()
    require: tuple[Clause, ...] = ()
    approval: bool = False  # a second person must approve (rollout promotion)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    mode: Mode
    stages: frozenset[str]
    rules: tuple[Rule, ...]
    description: str = ""
    version: int = 0  # the stored version; 0 until stored
    text: str = ""  # the YAML it was parsed from


Outcome = Literal["pass", "skip", "deny", "approval"]


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """One rule's answer: ``skip`` (its ``when`` does not hold), ``pass``, ``deny`` or
    ``approval`` (it waits for a second person)."""

    policy: str
    version: int
    mode: Mode
    rule: str
    outcome: Outcome
    message: str
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as the API and the audit log show it."""
        return {
            "policy": self.policy,
            "version": self.version,
            "mode": self.mode,
            "rule": self.rule,
            "outcome": self.outcome,
            "message": self.message,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every rule's answer at one stage."""

    stage: str
    rules: tuple[RuleVerdict, ...] = field(default=())

    @property
    def denials(self) -> list[RuleVerdict]:
        """Denials that block: enforce-mode rules that did not pass."""
        return [r for r in self.rules if r.mode == "enforce" and r.outcome == "deny"]

    @property
    def approvals(self) -> list[RuleVerdict]:
        """Enforce-mode rules still waiting for a second person's approval."""
        return [r for r in self.rules if r.mode == "enforce" and r.outcome == "approval"]

    @property
    def audited(self) -> list[RuleVerdict]:
        """Audit-mode rules that would have blocked: recorded, not enforced."""
        return [r for r in self.rules if r.mode == "audit" and r.outcome in ("deny", "approval")]

    @property
    def allowed(self) -> bool:
        """Nothing blocks and nothing waits."""
        return not self.denials and not self.approvals

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the stage, whether it is allowed, every rule's verdict."""
        return {
            "stage": self.stage,
            "allowed": self.allowed,
            "rules": [r.to_dict() for r in self.rules],
        }


class PolicyDenied(Forbidden):
    """An enforce-mode policy refused the action (403, code ``policy_denied``)."""

    code = "policy_denied"

    @classmethod
    def of(cls, verdict: Verdict, blocking: list[RuleVerdict]) -> PolicyDenied:
        """The error naming the first blocking rule and how to comply, listing them all."""
        first = blocking[0]
        why = f" ({'; '.join(first.reasons)})" if first.reasons else ""
        more = f" (and {len(blocking) - 1} more rule(s))" if len(blocking) > 1 else ""
        return cls(
            f"policy '{first.policy}' rule '{first.rule}' refuses {verdict.stage}{why}: "
            f"{first.message}{more}",
            policy=first.policy,
            rule=first.rule,
            comply=first.message,
            stage=verdict.stage,
            denials=[r.to_dict() for r in blocking],
        )


# --- evaluation ------------------------------------------------------------------------------


def _get(context: Mapping[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _judge(policy: Policy, rule: Rule, context: Mapping[str, Any]) -> RuleVerdict:
    def verdict(outcome: Outcome, reasons: Sequence[str] = ()) -> RuleVerdict:
        return RuleVerdict(
            policy.name, policy.version, policy.mode, rule.name, outcome, rule.message, (*reasons,)
        )

    if _first_problem(rule.when, context) is not None:
        return verdict("skip")
    if rule.approval:
        approvers = _get(context, "rollout.approved_by") or []
        if approvers:
            return verdict("pass", [f"approved by {', '.join(map(str, approvers))}"])
        starter = _get(context, "rollout.created_by") or "its starter"
        return verdict("approval", [f"needs approval by someone other than {starter}"])
    problems = [p for clause in rule.require if (p := clause.problem(context)) is not None]
    return verdict("deny", problems) if problems else verdict("pass")


def evaluate(policies: Iterable[Policy], stage: str, context: Mapping[str, Any]) -> Verdict:
    """Every rule of every policy that applies at ``stage``, judged against ``context``."""
    return Verdict(
        stage,
        tuple(
            _judge(policy, rule, context)
            for policy in policies
            if stage in policy.stages
            for rule in policy.rules
        ),
    )
