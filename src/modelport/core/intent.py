"""The ``modelport.yaml`` intent file: what one endpoint should be, in the user's words.

``parse_intent`` turns the file's text into a frozen ``Intent`` or raises one
``ValidationFailed`` that lists every problem as ``<field path> (line N): <what is wrong>``.
Line numbers come from the composed YAML nodes, so they point at what the user wrote.

``Intent.to_dict`` dumps with the file's own key names (``interval``, not ``interval_s``), so
``parse_intent(yaml.safe_dump(intent.to_dict())) == intent``; ``intent_digest`` hashes that
dump, so two files that say the same thing ("2m" or 120, any key order) share a digest.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from itertools import pairwise
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelport.core.enums import Task
from modelport.core.errors import InvalidRequest, ValidationFailed
from modelport.core.names import check_name, parse_model_ref

__all__ = [
    "MAX_INTENT_BYTES",
    "MAX_INTENT_DEPTH",
    "Intent",
    "IntentBatching",
    "IntentBudget",
    "IntentData",
    "IntentLimits",
    "IntentReplicas",
    "IntentResources",
    "IntentTraffic",
    "Rollout",
    "Routing",
    "Segment",
    "SegmentMatch",
    "Slo",
    "intent_digest",
    "parse_duration",
    "parse_intent",
]

# Strict so that YAML's own types are kept: "20" or true is not silently a number.
_Int = Annotated[int, Strict()]
_Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # .inf is YAML, not a bound
_Str = Annotated[str, Strict()]
_Text = Annotated[str, Strict(), Field(min_length=1)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_REVISION = re.compile(r"^(candidate|stable|r[1-9][0-9]*)$")
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"500ms"``, ``"30s"``, ``"1.5m"`` or ``"1h"``."""
    seconds = math.nan
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    except OverflowError:  # an integer of 400 digits
        pass
    if not math.isfinite(seconds):  # also .inf and .nan, which YAML allows
        raise ValueError(f"must be a duration such as 30s, 2m or 1h, got {_show(value)}")
    return seconds


def _name(kind: str, value: str) -> str:
    # check_name raises the 400 meant for API callers; here it must become a field error.
    try:
        return check_name(kind, value)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IntentData(_Model):
    sensitivity: Literal["public", "internal", "confidential", "restricted"] = "internal"


class IntentTraffic(_Model):
    peak_rps: Annotated[_Float, Field(gt=0)] | None = None
    avg_input_tokens: Annotated[_Int, Field(ge=0)] | None = None
    avg_output_tokens: Annotated[_Int, Field(ge=0)] | None = None
    avg_payload_kb: Annotated[_Float, Field(ge=0)] | None = None


class Slo(_Model):
    p95_latency_ms: Annotated[_Float, Field(gt=0)] | None = None
    availability: Annotated[_Float, Field(gt=0, le=100)] | None = None  # percent
    max_error_rate: Annotated[_Float, Field(ge=0, le=1)] = 0.01


class IntentReplicas(_Model):
    min: Annotated[_Int, Field(ge=1, le=64)] = 1
    max: Annotated[_Int, Field(ge=1, le=64)] = 1

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, data: Any) -> Any:
        # A plain N means a fixed size; checked here so one bad N is one error, not two.
        if isinstance(data, int) and not isinstance(data, bool):
            if not 1 <= data <= 64:
                raise ValueError(f"must be between 1 and 64, got {data}")
            return {"min": data, "max": data}
        if not isinstance(data, dict):
            raise ValueError(f"must be an integer or a mapping {{min, max}}, got {_show(data)}")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> IntentReplicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class IntentResources(_Model):
    """Where and how many: the replica range is ``resources.replicas.min`` / ``.max``."""

    hardware: _Text = "auto"
    replicas: IntentReplicas = IntentReplicas()


class IntentBatching(_Model):
    max_batch_size: Annotated[_Int, Field(ge=1, le=4096)] = 32
    max_wait_ms: Annotated[_Float, Field(ge=0, le=1000)] = 5.0


class Rollout(_Model):
    """How a new revision replaces the running one. Durations are held in seconds."""

    strategy: Literal["immediate", "canary", "blue-green", "shadow"] = "immediate"
    steps: tuple[Annotated[_Int, Field(ge=1, le=100)], ...] = (10, 50, 100)
    interval_s: float = Field(default=60.0, alias="interval", gt=0)
    min_requests: Annotated[_Int, Field(ge=0)] = 20
    shadow_sample: Annotated[_Float, Field(gt=0, le=1)] = 0.1
    keep_previous_s: float = Field(default=300.0, alias="keep_previous", ge=0)

    @field_validator("interval_s", "keep_previous_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"must be strictly increasing, got {list(steps)}")
        if not steps or steps[-1] != 100:
            raise ValueError(f"must end at 100, got {list(steps)}")
        return steps


class SegmentMatch(_Model):
    """Exactly one of: a header (one ``name: value`` pair), a customer, a key id, a project."""

    header: dict[_Str, _Str] | None = None
    customer: _Text | None = None
    key: _Text | None = None
    project: _Text | None = None

    @field_validator("header")
    @classmethod
    def _one_header(cls, header: dict[str, str] | None) -> dict[str, str] | None:
        if header is None:
            return None
        if len(header) != 1:
            raise ValueError(f"must be one 'name: value' pair, got {len(header)}")
        # HTTP header names are case-insensitive; one spelling keeps digests stable.
        return {name.lower(): value for name, value in header.items()}

    @field_validator("project")
    @classmethod
    def _project(cls, project: str | None) -> str | None:
        return None if project is None else _name("project", project)

    @model_validator(mode="after")
    def _exactly_one(self) -> SegmentMatch:
        given = [kind for kind in ("header", "customer", "key", "project") if getattr(self, kind)]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"needs exactly one of header, customer, key or project, got {got}")
        return self


class Segment(_Model):
    """Requests that ``match`` go to ``revision`` (candidate, stable or rN)."""

    match: SegmentMatch
    revision: _Str

    @field_validator("revision")
    @classmethod
    def _revision(cls, revision: str) -> str:
        if not _REVISION.match(revision):
            raise ValueError(f"must be candidate, stable or rN (e.g. r3), got {revision!r}")
        return revision

    @property
    def kind(self) -> Literal["header", "customer", "key", "project"]:
        """Which match kind this segment uses."""
        if self.match.header is not None:
            return "header"
        if self.match.customer is not None:
            return "customer"
        return "key" if self.match.key is not None else "project"

    @property
    def name(self) -> str | None:
        """The lower-case header name for kind ``header``; ``None`` otherwise."""
        return next(iter(self.match.header)) if self.match.header else None

    @property
    def value(self) -> str:
        """The header's value, or the customer, key id or project to match."""
        if self.match.header:
            return next(iter(self.match.header.values()))
        return self.match.customer or self.match.key or self.match.project or ""


class Routing(_Model):
    segments: tuple[Segment, ...] = ()
    sticky: Literal["customer", "key", "none"] = "none"
    fallback: tuple[_Str, ...] = ()
    # One deadline per request, retries and fallbacks included; unset: the server's
    # MODELPORT_UPSTREAM_TIMEOUT_S. Clients may ask for less, never for more.
    timeout_s: float | None = Field(default=None, alias="timeout", gt=0, le=3600)

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, fallback: tuple[str, ...]) -> tuple[str, ...]:
        for target in fallback:
            if target != "previous":
                _name("fallback endpoint", target)
        return fallback


class IntentLimits(_Model):
    rpm: Annotated[_Int, Field(ge=1)] | None = None
    tpm: Annotated[_Int, Field(ge=1)] | None = None
    concurrency: Annotated[_Int, Field(ge=1)] | None = None


class IntentBudget(_Model):
    monthly_usd: Annotated[_Float, Field(ge=0)] | None = None


class Intent(_Model):
    """One endpoint's ``modelport.yaml``; only ``endpoint``, ``task`` and ``model`` are required."""

    endpoint: _Str
    project: _Str = "default"
    task: Annotated[Task, Field(strict=False)]  # lax so the YAML string "chat" is accepted
    model: _Str  # kept as written; parse_model_ref(intent.model) gives its parts
    outcome: Annotated[_Str, Field(max_length=2000)] | None = None
    data: IntentData = IntentData()
    traffic: IntentTraffic = IntentTraffic()
    slo: Slo = Slo()
    environment: _Str = "sandbox"
    resources: IntentResources = IntentResources()
    runtime_options: dict[_Str, Any] = Field(default_factory=dict)
    batching: IntentBatching | None = None
    rollout: Rollout = Rollout()
    limits: IntentLimits = IntentLimits()
    budget: IntentBudget = IntentBudget()
    consumers: tuple[_Str, ...] = ()
    routing: Routing = Routing()

    @field_validator("endpoint", "project", "environment")
    @classmethod
    def _names(cls, value: str, info: ValidationInfo) -> str:
        return _name(info.field_name or "name", value)

    @field_validator("model")
    @classmethod
    def _model_ref(cls, model: str) -> str:
        try:
            parse_model_ref(model)
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None
        return model

    @field_validator("consumers")
    @classmethod
    def _consumers(cls, consumers: tuple[str, ...]) -> tuple[str, ...]:
        for consumer in consumers:
            kind, _, ident = consumer.partition(":")
            if kind in ("team", "project"):
                _name(kind, ident)
            elif kind != "key" or not _KEY_ID.match(ident):
                raise ValueError(
                    f"each consumer must be team:NAME, project:NAME or key:ID, got {consumer!r}"
                )
        return consumers

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with the YAML's own key names; parsing its YAML dump gives ``self``."""
        return self.model_dump(mode="json", by_alias=True)


def intent_digest(intent: Intent) -> str:
    """``sha256:<hex>`` of the canonical JSON dump: equal intents give equal digests."""
    canonical = json.dumps(
        intent.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# --- parsing and error reporting -------------------------------------------------------------

_Path = tuple[str | int, ...]
_Problem = tuple[str, int, str]  # field path, line, message

MAX_INTENT_BYTES = 64 * 1024
"""The largest intent file: a full one with every field and many segments is ~2 KB."""
MAX_INTENT_DEPTH = 32
"""How deeply mappings and lists may nest; the schema itself needs 6 levels."""


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that an intent file may not use."""


class _IntentLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses what makes a small file expensive, before expanding it.

    Anchors and aliases let 400 bytes stand for megabytes once constructed (a "billion laughs"),
    so both are refused where they are written; nesting is refused past ``MAX_INTENT_DEPTH``
    while the document is composed, before any recursion gets deep. Values that PyYAML
    cannot construct (an integer of 5,000 digits, a date with month 13) become YAML errors
    with their line instead of escaping as ``ValueError``.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed in intent files: write "
                "the value out where it is used",
                event.start_mark,
            )
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_INTENT_DEPTH:
                raise _Refused(
                    None,
                    None,
                    f"lists and mappings nest more than {MAX_INTENT_DEPTH} levels deep",
                    event.start_mark,
                )
        try:
            return super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_show(node.value)}: {exc}", node.start_mark
            ) from None


def parse_intent(text: str, *, filename: str = "modelport.yaml") -> Intent:
    """Parse a ``modelport.yaml`` text, or raise ``ValidationFailed`` listing every problem.

    ``filename`` only names the file in the message's first line. Files over
    ``MAX_INTENT_BYTES``, anchors, aliases and nesting deeper than ``MAX_INTENT_DEPTH`` are
    refused before the document is expanded.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_INTENT_BYTES:
        _fail(filename, [("", 1, f"the file is {size} bytes; the limit is {MAX_INTENT_BYTES}")])
    try:
        loader = _IntentLoader(text)  # refuses control characters at once
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        what = f"not valid YAML: character {exc.character:#06x} is not allowed ({exc.reason})"
        _fail(filename, [("", line, what)])
    try:
        node = loader.get_single_node()
        problems: list[_Problem] = []
        lines: dict[_Path, int] = {(): 1}
        if node is not None:
            _walk(node, (), lines, problems, set())
            data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = getattr(exc, "problem", None) or str(exc)
        what = what if isinstance(exc, _Refused) else f"not valid YAML: {what}"
        _fail(filename, [("", line, what)])
    finally:
        loader.dispose()
    if node is None:
        _fail(filename, [("", 1, "the file is empty: it needs at least endpoint, task and model")])
    if not isinstance(node, yaml.MappingNode):
        got = "a list" if isinstance(node, yaml.SequenceNode) else _show(data)
        line = node.start_mark.line + 1
        _fail(filename, [("", line, f"the top level must be a mapping of fields, got {got}")])
    try:
        intent = Intent.model_validate(data)
    except ValidationError as exc:
        _fail(filename, problems + [_problem(error, lines) for error in exc.errors()])
    if problems:  # duplicate keys, though the rest of the file is valid
        _fail(filename, problems)
    return intent


def _walk(
    node: yaml.Node,
    path: _Path,
    lines: dict[_Path, int],
    problems: list[_Problem],
    seen: set[int],
) -> None:
    """Map each field path to its line, and report duplicate keys (PyYAML keeps the last)."""
    if id(node) in seen:  # an alias: its node was walked where the anchor is
        return
    seen.add(id(node))
    for child_path, child_line, child in _children(node, path, problems):
        lines.setdefault(child_path, child_line)
        _walk(child, child_path, lines, problems, seen)


def _children(
    node: yaml.Node, path: _Path, problems: list[_Problem]
) -> Iterator[tuple[_Path, int, yaml.Node]]:
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield (*path, index), item.start_mark.line + 1, item
    elif isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                continue  # merge keys and complex keys have no field path of their own
            line = key.start_mark.line + 1
            if key.value in keys:
                problems.append((_render((*path, key.value)), line, "duplicate key"))
            keys.add(key.value)
            yield (*path, key.value), line, value


def _problem(error: Any, lines: dict[_Path, int]) -> _Problem:
    loc: _Path = tuple(error["loc"])
    known = loc
    while known not in lines:  # e.g. a missing field: point at its parent mapping
        known = known[:-1]
    return _render(loc), lines[known], _plain(error)


def _render(loc: _Path) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "bool_type": "true or false",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _plain(error: Any) -> str:
    """Pydantic's message in plain words; its wording leaks its internals."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, _show(error.get("input"))
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {got}"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {_show(ctx.get(key))}, got {got}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '')}; got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])


def _show(value: object) -> str:
    """A value as the user wrote it in YAML, cut short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 0.0 reads as 0: the user most likely wrote 0
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(filename: str, problems: list[_Problem]) -> NoReturn:
    problems = sorted(problems, key=lambda problem: problem[1])
    count = len(problems)
    head = f"{filename} has {count} problem{'s' if count != 1 else ''}:"
    body = [
        f"  {field} (line {line}): {message}" if field else f"  line {line}: {message}"
        for field, line, message in problems
    ]
    raise ValidationFailed(
        "\n".join([head, *body]),
        errors=[
            {"field": field, "line": line, "message": message} for field, line, message in problems
        ],
    )
