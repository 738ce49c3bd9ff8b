"""The intent's JSON Schema, and the intent fields added for planning (scale to zero,
autoscaling, environment auto) with the digests of intents written before them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from modelport.cli import app
from modelport.core.errors import ValidationFailed
from modelport.core.intent import intent_digest, parse_intent
from modelport.core.intent_schema import SCHEMA_URI, intent_schema, intent_schema_text
from modelport.core.intent_yaml import field_line

DOCS_SCHEMA = Path(__file__).parents[2] / "docs" / "intent.schema.json"

BASE = "endpoint: support-chat\ntask: chat\nmodel: smollm2-135m@champion\n"
FULL = (
    BASE
    + """\
project: support
outcome: Draft replies to cut handling time by 20%
data: {sensitivity: confidential}
traffic: {peak_rps: 20, avg_input_tokens: 400, avg_output_tokens: 150}
slo: {p95_latency_ms: 800, availability: 99.9, window: 7d}
environment: auto
resources:
  hardware: l4
  replicas: {min: 0, max: 4}
  autoscaling: {target_in_flight: 2, scale_up_after: 5s, scale_down_after: 2m,
                idle_to_zero_after: 10m}
rollout: {strategy: canary, steps: [10, 100], interval: 90, keep_previous: 5m}
routing:
  segments:
    - match: {header: {x-beta: "1"}}
      revision: candidate
  timeout: 30s
limits: {rpm: 600}
budget: {monthly_usd: 900}
"""
)


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(intent_schema())


def test_docs_schema_is_what_modelport_schema_prints() -> None:
    # Regenerate with: modelport schema -o docs/intent.schema.json
    assert DOCS_SCHEMA.read_text(encoding="utf-8") == intent_schema_text()
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    assert result.output == intent_schema_text()


def test_schema_is_draft_2020_12_with_yaml_key_names_and_descriptions() -> None:
    schema = intent_schema()
    assert schema["$schema"] == SCHEMA_URI
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["endpoint", "task", "model"]
    rollout = schema["$defs"]["Rollout"]["properties"]
    assert "interval" in rollout and "interval_s" not in rollout  # the file's names
    autoscaling = schema["$defs"]["IntentAutoscaling"]["properties"]
    assert set(autoscaling) == {
        "target_in_flight",
        "scale_up_after",
        "scale_down_after",
        "idle_to_zero_after",
    }
    # Every property says what it is for.
    for name, definition in [("Intent", schema), *schema["$defs"].items()]:
        for prop, body in definition.get("properties", {}).items():
            assert body.get("description"), f"{name}.{prop} has no description"


def test_schema_accepts_what_the_parser_accepts() -> None:
    for text in (BASE, FULL, BASE + "resources: {replicas: 3}\n"):
        parse_intent(text)
        errors = [e.message for e in _validator().iter_errors(yaml.safe_load(text))]
        assert errors == [], text


@pytest.mark.parametrize(
    "extra",
    [
        "bogus: 1\n",
        "task2: chat\n",
        "resources: {replicas: 0}\n",
        "resources: {replicas: {min: 0, max: 0}}\n",
        "resources: {autoscaling: {scale_up_after: soon}}\n",
        "resources: {autoscaling: {target_in_flight: 0}}\n",
        "rollout: {interval: 2 minutes}\n",
        "slo: {window: 60}\n",  # a number is seconds: under the 1h floor
        "data: {sensitivity: secret}\n",
    ],
)
def test_schema_refuses_what_the_parser_refuses(extra: str) -> None:
    text = BASE + extra
    with pytest.raises(ValidationFailed):
        parse_intent(text)
    assert list(_validator().iter_errors(yaml.safe_load(text)))


def test_replicas_min_zero_autoscaling_and_environment_auto() -> None:
    intent = parse_intent(FULL)
    assert (intent.resources.replicas.min, intent.resources.replicas.max) == (0, 4)
    scaling = intent.resources.autoscaling
    assert scaling is not None
    assert (scaling.scale_up_after_s, scaling.scale_down_after_s) == (5.0, 120.0)
    assert scaling.idle_to_zero_after_s == 600.0
    assert intent.environment == "auto"
    dumped = intent.to_dict()
    assert dumped["resources"]["autoscaling"]["idle_to_zero_after"] == 600.0
    assert parse_intent(yaml.safe_dump(dumped)) == intent
    defaults = parse_intent(BASE + "resources: {autoscaling: {}}\n").resources.autoscaling
    assert defaults is not None and defaults.target_in_flight == 4.0
    assert defaults.scale_down_after_s == 60.0 and defaults.idle_to_zero_after_s == 300.0


def test_a_plain_replica_count_is_still_at_least_one() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_intent(BASE + "resources: {replicas: 0}\n")
    assert caught.value.details["errors"][0]["field"] == "resources.replicas"
    with pytest.raises(ValidationFailed) as caught:
        parse_intent(BASE + "resources: {replicas: {min: 0, max: 0}}\n")
    assert caught.value.details["errors"][0]["field"] == "resources.replicas.max"


def test_intents_without_autoscaling_keep_their_digest() -> None:
    # Computed with core/intent.py as it was before autoscaling existed (commit 7ae1287).
    text = (
        "endpoint: support-chat\nproject: support\ntask: chat\nmodel: smollm2-135m@champion\n"
        "resources:\n  hardware: cpu\n  replicas: {min: 1, max: 3}\n"
        "rollout: {strategy: canary, interval: 2m}\n"
    )
    intent = parse_intent(text)
    assert "autoscaling" not in intent.to_dict()["resources"]
    assert intent_digest(intent) == (
        "sha256:838c99e8da3b7f9a0629e87feca5c85a8a7bfdbb93253726d3f90e841563d25f"
    )


def test_field_line_points_at_what_the_user_wrote() -> None:
    assert field_line(FULL, "resources.hardware") == 11
    assert field_line(FULL, "resources.replicas.min") == 12
    assert field_line(FULL, "resources.autoscaling.idle_to_zero_after") == 14
    assert field_line(FULL, "routing.segments[0].revision") == 19
    assert field_line(FULL, "environment") == 9
    assert field_line(FULL, "resources.autoscaling.missing") is None
    assert field_line(BASE, "resources.hardware") is None  # a default has no line
    assert field_line("- not a mapping\n", "endpoint") is None
    assert field_line("key: [unclosed\n", "key") is None


def test_schema_json_round_trips() -> None:
    assert json.loads(intent_schema_text()) == intent_schema()
