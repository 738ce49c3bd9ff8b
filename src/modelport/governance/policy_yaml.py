"""Reading a policy's YAML: the intent file's safe loading, then every field path checked
against the context schema, each problem reported with its field path and line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport.core.errors import InvalidRequest
from modelport.core.intent_yaml import (
    FieldPath,
    Problem,
    fail,
    field_problem,
    read_mapping,
    show,
)
from modelport.core.names import check_name
from modelport.governance.policy_context import CONTEXT_SCHEMA, SchemaField
from modelport.governance.policy_rules import OPERATORS, AnyOf, Clause, Condition, Policy, Rule

__all__ = ["parse_policy"]

# --- parsing ---------------------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _RuleDoc(_Doc):
    name: str = Field(min_length=1, max_length=128)
    message: str = Field(min_length=1, max_length=2000)
    when: dict[str, Any] = Field(default_factory=dict)
    require: dict[str, Any] = Field(default_factory=dict)
    approval: Literal["second_person"] | None = None


class _PolicyDoc(_Doc):
    name: str | None = None
    description: str = Field(default="", max_length=2000)
    mode: Literal["enforce", "audit"] = "enforce"
    stages: list[Literal["plan", "apply", "promote", "key_create"]] = Field(min_length=1)
    rules: list[_RuleDoc] = Field(min_length=1, max_length=100)


class _Parser:
    """Turns the validated document's conditions into clauses, collecting every problem."""

    def __init__(self, lines: dict[FieldPath, int], stages: frozenset[str]) -> None:
        self.lines = lines
        self.stages = stages
        self.problems: list[Problem] = []

    def problem(self, loc: FieldPath, message: str) -> None:
        self.problems.append(
            field_problem({"loc": loc, "type": "policy", "msg": message}, self.lines)
        )

    def clauses(self, loc: FieldPath, doc: Mapping[str, Any]) -> tuple[Clause, ...]:
        out: list[Clause] = []
        for path, spec in doc.items():
            if path == "any_of":
                out.extend(self._any_of((*loc, path), spec))
            else:
                out.extend(self._conditions((*loc, path), path, spec))
        return tuple(out)

    def _any_of(self, loc: FieldPath, spec: Any) -> list[Clause]:
        if not isinstance(spec, list) or len(spec) < 2:
            self.problem(loc, f"must be a list of two or more condition mappings, got {show(spec)}")
            return []
        groups = []
        for index, group in enumerate(spec):
            if not isinstance(group, dict) or not group:
                self.problem((*loc, index), f"must be a mapping of conditions, got {show(group)}")
                continue
            if "any_of" in group:
                self.problem((*loc, index, "any_of"), "any_of cannot nest inside any_of")
                continue
            conditions = self.clauses((*loc, index), group)
            groups.append(tuple(c for c in conditions if isinstance(c, Condition)))
        return [AnyOf(tuple(groups))]

    def _conditions(self, loc: FieldPath, path: str, spec: Any) -> list[Clause]:
        if not self._known(loc, path):
            return []
        if not isinstance(spec, dict) or not spec:
            self.problem(
                loc,
                f"must be a mapping of operator to value such as {{equals: x}}, got {show(spec)}",
            )
            return []
        out: list[Clause] = []
        for op, operand in spec.items():
            op_loc = (*loc, op)
            if op == "exists":
                if not isinstance(operand, bool):
                    self.problem(op_loc, f"exists needs true or false, got {show(operand)}")
                    continue
            elif op not in OPERATORS:
                known = ", ".join(["exists", *OPERATORS])
                self.problem(op_loc, f"unknown operator {op!r}: use one of {known}")
                continue
            elif (message := OPERATORS[op].check(operand)) is not None:
                self.problem(op_loc, f"{op} {message}")
                continue
            else:
                self._choices(op_loc, path, operand)
            out.append(Condition(path, str(op), operand))
        return out

    def _known(self, loc: FieldPath, path: str) -> bool:
        known = CONTEXT_SCHEMA.lookup(path) if isinstance(path, str) else None
        if known is None:
            near = CONTEXT_SCHEMA.near(str(path))
            hint = (
                f"; known fields here: {', '.join(near)}"
                if near
                else (f"; a path starts with one of {', '.join(CONTEXT_SCHEMA.roots)}")
            )
            self.problem(loc, f"unknown field {path!r}{hint}")
            return False
        root = path.split(".")[0]
        missing = sorted(self.stages - CONTEXT_SCHEMA.roots[root])
        if missing:
            have = ", ".join(sorted(CONTEXT_SCHEMA.roots[root]))
            self.problem(
                loc,
                f"{root}.* is known only at stage {have}, but the policy also applies at "
                f"{', '.join(missing)}",
            )
            return False
        return True

    def _choices(self, loc: FieldPath, path: str, operand: Any) -> None:
        choices = CONTEXT_SCHEMA.fields.get(path, SchemaField()).choices
        if choices is None:
            return
        values = operand if isinstance(operand, list) else [operand]
        wrong = [v for v in values if str(v) not in choices]
        if wrong:
            self.problem(
                loc, f"{show(wrong[0])} is not a value {path} can take: one of {', '.join(choices)}"
            )


def parse_policy(text: str, *, name: str | None = None, filename: str = "policy.yaml") -> Policy:
    """Parse and check a policy's YAML, or raise ``ValidationFailed`` (422) listing every
    problem with its field path and line. ``name`` (from the URL) must match the document's
    own ``name`` when it has one."""
    if name is not None:
        try:
            check_name("policy", name)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, field="name") from None
    data, lines, duplicates = read_mapping(text, filename, needs="stages and rules")
    try:
        doc = _PolicyDoc.model_validate(data)
    except ValidationError as exc:
        fail(filename, duplicates + [field_problem(error, lines) for error in exc.errors()])
    problems: list[Problem] = duplicates
    own = doc.name if doc.name is not None else name
    if own is None:
        problems.append(("name", 1, "required (or give it in the URL)"))
    elif name is not None and own != name:
        problems.append(("name", lines[("name",)], f"is {own!r} but the URL names {name!r}"))
    else:
        try:
            check_name("policy", own)
        except InvalidRequest as exc:
            problems.append(("name", lines.get(("name",), 1), exc.message))
    parser = _Parser(lines, frozenset(doc.stages))
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, rule in enumerate(doc.rules):
        loc: FieldPath = ("rules", index)
        if rule.name in seen:
            parser.problem((*loc, "name"), f"duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        if rule.approval is not None and rule.require:
            parser.problem((*loc, "approval"), "a rule has either require or approval, not both")
        elif rule.approval is None and not rule.require:
            parser.problem(loc, "needs require (conditions) or approval: second_person")
        if rule.approval is not None and set(doc.stages) != {"promote"}:
            parser.problem(
                (*loc, "approval"), "approval rules apply to promotion: set stages: [promote]"
            )
        rules.append(
            Rule(
                name=rule.name,
                message=rule.message.strip(),
                when=parser.clauses((*loc, "when"), rule.when),
                require=parser.clauses((*loc, "require"), rule.require),
                approval=rule.approval is not None,
            )
        )
    problems += parser.problems
    if problems:
        fail(filename, problems)
    assert own is not None
    return Policy(own, doc.mode, frozenset(doc.stages), tuple(rules), doc.description, text=text)
