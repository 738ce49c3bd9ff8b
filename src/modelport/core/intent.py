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
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from modelport.core.enums import Task
from modelport.core.errors import InvalidRequest
from modelport.core.intent_yaml import (
    MAX_INTENT_BYTES,
    MAX_INTENT_DEPTH,
    fail,
    field_problem,
    read_mapping,
    show,
)
from modelport.core.names import check_name, parse_model_ref

__all__ = [
    "MAX_INTENT_BYTES",
    "MAX_INTENT_DEPTH",
    "Intent",
    "IntentAutoscaling",
    "IntentBatching",
    "IntentBudget",
    "IntentData",
    "IntentLimits",
    "IntentReplicas",
    "IntentResources",
    "IntentTraffic",
    "OutputDriftGate",
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
_DAYS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*d\s*$")
# The SLO window: an hour to a year (28 days when unset).
_MIN_SLO_WINDOW_S = 3_600.0
_MAX_SLO_WINDOW_S = 366 * 86_400.0


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
        raise ValueError(f"must be a duration such as 30s, 2m or 1h, got {show(value)}")
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
    """The endpoint's promise. ``availability`` and ``p95_latency_ms`` are the objectives its
    error budget is kept against over ``window`` (unset: 28 days); ``max_error_rate`` and
    ``p95_latency_ms`` also gate rollouts."""

    p95_latency_ms: Annotated[_Float, Field(gt=0)] | None = None
    availability: Annotated[_Float, Field(gt=0, le=100)] | None = None  # percent
    max_error_rate: Annotated[_Float, Field(ge=0, le=1)] = 0.01
    # None rather than 28 days, and left out of the dump when None (below), so that intents
    # applied before the field existed keep their digest and show no change.
    window_s: float | None = Field(default=None, alias="window")

    @field_validator("window_s", mode="before")
    @classmethod
    def _window(cls, value: object) -> float | None:
        if value is None:
            return None
        try:
            if isinstance(value, str) and (match := _DAYS.match(value)):
                seconds = float(match.group(1)) * 86_400.0
            else:
                seconds = parse_duration(value)
        except ValueError:
            seconds = math.nan
        if not _MIN_SLO_WINDOW_S <= seconds <= _MAX_SLO_WINDOW_S:  # also NaN
            raise ValueError(f"must be a duration from 1h to 366d such as 28d, got {show(value)}")
        return seconds

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        if self.window_s is None:
            dumped.pop("window", None)
            dumped.pop("window_s", None)
        return dumped


class IntentReplicas(_Model):
    """How many replicas the revision runs: a fixed N, or a range the autoscaler keeps to.

    ``min`` may be 0 (scale to zero after ``resources.autoscaling.idle_to_zero_after`` with
    no request; a new revision still starts with one replica), ``max`` is at least 1."""

    min: Annotated[
        _Int,
        Field(ge=0, le=64, description="Fewest replicas; 0 lets the endpoint scale to zero."),
    ] = 1
    max: Annotated[
        _Int, Field(ge=1, le=64, description="Most replicas the autoscaler may start.")
    ] = 1

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, data: Any) -> Any:
        # A plain N means a fixed size; checked here so one bad N is one error, not two.
        if isinstance(data, int) and not isinstance(data, bool):
            if not 1 <= data <= 64:
                raise ValueError(f"must be between 1 and 64, got {data}")
            return {"min": data, "max": data}
        if not isinstance(data, dict):
            raise ValueError(f"must be an integer or a mapping {{min, max}}, got {show(data)}")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> IntentReplicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class IntentAutoscaling(_Model):
    """How the replica count follows load, between ``replicas.min`` and ``replicas.max``.
    Durations are held in seconds."""

    target_in_flight: Annotated[
        _Float,
        Field(gt=0, le=10_000, description="Requests in flight plus queued per replica to aim at."),
    ] = 4.0
    scale_up_after_s: float = Field(
        default=10.0,
        alias="scale_up_after",
        ge=0,
        le=3600,
        description="How long the load must call for more replicas before they are started.",
    )
    scale_down_after_s: float = Field(
        default=60.0,
        alias="scale_down_after",
        ge=0,
        le=86_400,
        description="How long the load must allow fewer replicas before any is stopped.",
    )
    idle_to_zero_after_s: float = Field(
        default=300.0,
        alias="idle_to_zero_after",
        gt=0,
        le=7 * 86_400,
        description="With replicas.min 0: how long without a request before the last "
        "replica stops.",
    )

    @field_validator(
        "scale_up_after_s", "scale_down_after_s", "idle_to_zero_after_s", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)


class IntentResources(_Model):
    """Where and how many: the replica range is ``resources.replicas.min`` / ``.max``."""

    hardware: Annotated[
        _Text,
        Field(description="A hardware type from the catalog (modelport hardware), or auto."),
    ] = "auto"
    replicas: IntentReplicas = IntentReplicas()
    # Left out of the dump when unset, so that intents applied before it existed keep their
    # digest and show no change.
    autoscaling: IntentAutoscaling | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        if self.autoscaling is None:
            dumped.pop("autoscaling", None)
        return dumped


class IntentBatching(_Model):
    max_batch_size: Annotated[_Int, Field(ge=1, le=4096)] = 32
    max_wait_ms: Annotated[_Float, Field(ge=0, le=1000)] = 5.0


class OutputDriftGate(_Model):
    """A rollout gate on the candidate's outputs: its predicted-class distribution against
    the stable revision's (both sampled live), by PSI. A step does not pass before each has
    ``min_samples`` sampled outputs; a PSI over ``max_psi`` rolls back."""

    max_psi: Annotated[_Float, Field(gt=0)] = 0.2
    min_samples: Annotated[_Int, Field(ge=1, le=100_000)] = 100


class Rollout(_Model):
    """How a new revision replaces the running one. Durations are held in seconds."""

    strategy: Literal["immediate", "canary", "blue-green", "shadow"] = "immediate"
    steps: tuple[Annotated[_Int, Field(ge=1, le=100)], ...] = (10, 50, 100)
    interval_s: float = Field(default=60.0, alias="interval", gt=0)
    min_requests: Annotated[_Int, Field(ge=0)] = 20
    shadow_sample: Annotated[_Float, Field(gt=0, le=1)] = 0.1
    keep_previous_s: float = Field(default=300.0, alias="keep_previous", ge=0)
    # Left out of the dump when unset, so that intents applied before it existed keep their
    # digest and show no change.
    output_drift: OutputDriftGate | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        if self.output_drift is None:
            dumped.pop("output_drift", None)
        return dumped

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
        if info.field_name == "environment" and value == "auto":
            return value  # the planner picks the environment (planning.plan)
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


# --- parsing ---------------------------------------------------------------------------------


def parse_intent(text: str, *, filename: str = "modelport.yaml") -> Intent:
    """Parse a ``modelport.yaml`` text, or raise ``ValidationFailed`` listing every problem.

    ``filename`` only names the file in the message's first line. Files over
    ``MAX_INTENT_BYTES``, anchors, aliases and nesting deeper than ``MAX_INTENT_DEPTH`` are
    refused before the document is expanded.
    """
    data, lines, problems = read_mapping(text, filename, needs="endpoint, task and model")
    try:
        intent = Intent.model_validate(data)
    except ValidationError as exc:
        fail(filename, problems + [field_problem(error, lines) for error in exc.errors()])
    if problems:  # duplicate keys, though the rest of the file is valid
        fail(filename, problems)
    return intent
