"""The intent file's JSON Schema (draft 2020-12), for editors that check YAML as it is typed.

It is generated from the pydantic model (``core.intent.Intent``) with the YAML's own key
names, then amended where the model accepts more than its Python types say: durations are
numbers of seconds *or* strings such as ``"30s"``, ``resources.replicas`` is an integer *or*
a ``{min, max}`` mapping. Every field gets a description, so an editor's hover explains it.
``docs/intent.schema.json`` is this schema as ``modelport schema`` prints it (a test keeps
them equal).
"""

from __future__ import annotations

import json
from typing import Any

from modelport.core.intent import Intent

__all__ = ["SCHEMA_URI", "intent_schema", "intent_schema_text"]

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_DURATION_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$"
_WINDOW_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$"

# (definition, property) -> what it means, in the user's words. Pydantic's titles ("Peak Rps")
# say nothing an editor's hover would not; these do.
_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("Intent", "endpoint"): "The endpoint's name: clients call /v2/models/<endpoint>.",
    ("Intent", "project"): "The project that owns the endpoint (its team's permissions apply).",
    ("Intent", "task"): "What the model does; it must match the registered model's task.",
    ("Intent", "model"): "The model version to serve: name:version, name@alias or name.",
    ("Intent", "outcome"): (
        "Why this endpoint exists, in a sentence (shown with the endpoint and in reports)."
    ),
    ("Intent", "data"): "What the requests carry.",
    ("Intent", "traffic"): "The load to plan for.",
    ("Intent", "slo"): "The endpoint's latency, availability and error-rate objectives.",
    ("Intent", "environment"): (
        "Where it runs: an environment's name (modelport environments list), or auto to let "
        "the planner choose among those that accept the data's sensitivity."
    ),
    ("Intent", "resources"): "Hardware and replicas.",
    ("Intent", "runtime_options"): "Options passed to the model runtime as they are.",
    ("Intent", "batching"): "Server-side batching of single requests (tabular and vision).",
    ("Intent", "rollout"): "How a new revision replaces the running one.",
    ("Intent", "limits"): "Per-consumer rate and concurrency limits.",
    ("Intent", "budget"): "The monthly spend the endpoint should stay within.",
    ("Intent", "consumers"): "Who may call it: team:NAME, project:NAME or key:ID.",
    ("Intent", "routing"): "Segments, stickiness, fallbacks and the request deadline.",
    ("IntentData", "sensitivity"): (
        "The most sensitive data a request may carry; environments accept some levels only."
    ),
    ("IntentTraffic", "peak_rps"): "Requests per second at the busiest time.",
    ("IntentTraffic", "avg_input_tokens"): "Mean prompt length in tokens (chat, completion).",
    ("IntentTraffic", "avg_output_tokens"): "Mean generated tokens per request.",
    ("IntentTraffic", "avg_payload_kb"): "Mean request body size in KB.",
    ("Slo", "p95_latency_ms"): "95% of requests answer within this many milliseconds.",
    ("Slo", "availability"): "Percent of valid requests that must succeed, e.g. 99.9.",
    ("Slo", "max_error_rate"): "The error rate (0-1) a rollout step may not exceed.",
    ("Slo", "window"): "The window the error budget is kept over, 1h to 366d (default 28d).",
    ("IntentReplicas", "min"): "Fewest replicas; 0 lets the endpoint scale to zero.",
    ("IntentReplicas", "max"): "Most replicas the autoscaler may start.",
    ("IntentResources", "replicas"): (
        "A fixed number of replicas, or a {min, max} range the autoscaler keeps to."
    ),
    ("IntentResources", "autoscaling"): "How the replica count follows load within the range.",
    ("IntentBatching", "max_batch_size"): "Most requests run as one batch.",
    ("IntentBatching", "max_wait_ms"): "Longest a request waits for others to batch with.",
    ("OutputDriftGate", "max_psi"): "The PSI of predicted classes that rolls back.",
    ("OutputDriftGate", "min_samples"): "Sampled outputs each revision needs before a step.",
    ("Rollout", "strategy"): "immediate, canary, blue-green or shadow.",
    ("Rollout", "steps"): "Canary traffic percentages, strictly increasing, ending at 100.",
    ("Rollout", "interval"): "How long each step runs before it is judged.",
    ("Rollout", "min_requests"): "Requests a step needs before it can pass.",
    ("Rollout", "shadow_sample"): "Fraction of requests mirrored to a shadow revision.",
    ("Rollout", "keep_previous"): "How long the previous revision keeps running after.",
    ("Rollout", "output_drift"): "A gate on the candidate's output distribution.",
    ("SegmentMatch", "header"): "One 'name: value' header pair.",
    ("SegmentMatch", "customer"): "A customer id (X-Modelport-Customer).",
    ("SegmentMatch", "key"): "An API key id.",
    ("SegmentMatch", "project"): "A project name.",
    ("Segment", "match"): "Which requests: exactly one of header, customer, key or project.",
    ("Segment", "revision"): "Where they go: candidate, stable or rN.",
    ("Routing", "segments"): "Requests routed to a chosen revision, first match wins.",
    ("Routing", "sticky"): "Keep a customer or key on one revision during a rollout.",
    ("Routing", "fallback"): "Endpoints (or previous) tried when this one fails.",
    ("Routing", "timeout"): "One deadline per request, retries and fallbacks included.",
    ("IntentLimits", "rpm"): "Requests per minute per consumer.",
    ("IntentLimits", "tpm"): "Tokens per minute per consumer.",
    ("IntentLimits", "concurrency"): "Requests in flight per consumer.",
    ("IntentBudget", "monthly_usd"): "US dollars per month.",
}

# (definition, property) -> the pattern its string form follows; the number form is seconds.
_DURATIONS: dict[tuple[str, str], str] = {
    ("Slo", "window"): _WINDOW_PATTERN,
    ("Rollout", "interval"): _DURATION_PATTERN,
    ("Rollout", "keep_previous"): _DURATION_PATTERN,
    ("Routing", "timeout"): _DURATION_PATTERN,
    ("IntentAutoscaling", "scale_up_after"): _DURATION_PATTERN,
    ("IntentAutoscaling", "scale_down_after"): _DURATION_PATTERN,
    ("IntentAutoscaling", "idle_to_zero_after"): _DURATION_PATTERN,
}


def intent_schema() -> dict[str, Any]:
    """The intent's JSON Schema (draft 2020-12) with the YAML's key names."""
    schema = Intent.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    top = {key: schema.pop(key) for key in list(schema) if key != "$defs"}
    defs_and_top = {**defs, "Intent": top}
    for (name, prop), description in _DESCRIPTIONS.items():
        defs_and_top[name]["properties"][prop]["description"] = description
    for (name, prop), pattern in _DURATIONS.items():
        _as_duration(defs_and_top[name]["properties"][prop], pattern)
    window = defs["Slo"]["properties"]["window"]["anyOf"][0]
    window.update(minimum=3_600, maximum=366 * 86_400)  # checked by Slo._window when parsed
    replicas = defs["IntentResources"]["properties"]["replicas"]
    ref = replicas.pop("$ref")
    replicas["anyOf"] = [{"type": "integer", "minimum": 1, "maximum": 64}, {"$ref": ref}]
    top["title"] = "modelport.yaml"
    top["description"] = (
        "What one Modelport endpoint should be: its model, traffic, objectives, environment, "
        "resources and rollout. Only endpoint, task and model are required."
    )
    return {"$schema": SCHEMA_URI, **top, "$defs": dict(sorted(defs.items()))}


def _as_duration(prop: dict[str, Any], pattern: str) -> None:
    """A seconds property that also takes a string such as "30s": its bounds stay on the
    number form; the string form is held to the pattern (bounds are checked when parsed)."""
    nullable = any(option.get("type") == "null" for option in prop.get("anyOf", []))
    number = next(
        (option for option in prop.pop("anyOf", []) if option.get("type") == "number"), None
    )
    if number is None:
        number = {key: prop.pop(key) for key in list(prop) if key not in _KEEP}
    options: list[dict[str, Any]] = [number, {"type": "string", "pattern": pattern}]
    if nullable:
        options.append({"type": "null"})
    prop["anyOf"] = options


_KEEP = frozenset({"default", "description", "title"})


def intent_schema_text() -> str:
    """The schema as ``modelport schema`` prints it and ``docs/intent.schema.json`` holds it."""
    return json.dumps(intent_schema(), indent=2, ensure_ascii=False) + "\n"
