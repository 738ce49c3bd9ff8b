from __future__ import annotations

import textwrap

import pytest
import yaml

from modelport.core.enums import Task
from modelport.core.errors import ValidationFailed
from modelport.core.intent import (
    Intent,
    Rollout,
    intent_digest,
    parse_duration,
    parse_intent,
)

FULL = """\
endpoint: support-chat
project: support
task: chat
model: smollm2-135m@champion
outcome: Draft replies to cut handling time by 20%
data:
  sensitivity: confidential
traffic:
  peak_rps: 20
  avg_input_tokens: 400
  avg_output_tokens: 150
  avg_payload_kb: 4
slo:
  p95_latency_ms: 1500
  availability: 99.9
  max_error_rate: 0.01
environment: production
resources:
  hardware: auto
  replicas: {min: 1, max: 4}
runtime_options: {n_ctx: 4096}
batching: {max_batch_size: 32, max_wait_ms: 5}
rollout:
  strategy: canary
  steps: [10, 50, 100]
  interval: 2m
  min_requests: 100
  shadow_sample: 0.1
  keep_previous: 10m
limits: {rpm: 600, tpm: 200000, concurrency: 32}
budget: {monthly_usd: 500}
consumers: [team:support, project:crm]
routing:
  segments:
    - match: {header: {X-Tier: beta}}
      revision: candidate
    - match: {customer: acme}
      revision: r3
  sticky: customer
  fallback: [previous, support-chat-small]
"""

MINIMAL = "endpoint: e\ntask: chat\nmodel: m\n"


def _problems(text: str) -> list[tuple[str, int]]:
    """(field path, line) of every problem parse_intent reports."""
    with pytest.raises(ValidationFailed) as info:
        parse_intent(text)
    errors = info.value.details["errors"]
    assert info.value.message.splitlines()[0].startswith(f"modelport.yaml has {len(errors)} ")
    for error in errors:
        assert "pydantic" not in error["message"]
    return [(error["field"], error["line"]) for error in errors]


def _message(text: str) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_intent(text)
    assert info.value.status == 422
    return info.value.message


def test_full_example_parses_every_field() -> None:
    intent = parse_intent(FULL)
    assert intent.endpoint == "support-chat"
    assert intent.project == "support"
    assert intent.task is Task.CHAT
    assert intent.model == "smollm2-135m@champion"
    assert intent.outcome == "Draft replies to cut handling time by 20%"
    assert intent.data.sensitivity == "confidential"
    assert intent.traffic.peak_rps == 20.0
    assert intent.traffic.avg_input_tokens == 400
    assert intent.traffic.avg_output_tokens == 150
    assert intent.traffic.avg_payload_kb == 4.0
    assert intent.slo.p95_latency_ms == 1500.0
    assert intent.slo.availability == 99.9
    assert intent.slo.max_error_rate == 0.01
    assert intent.environment == "production"
    assert intent.resources.hardware == "auto"
    assert (intent.resources.replicas.min, intent.resources.replicas.max) == (1, 4)
    assert intent.runtime_options == {"n_ctx": 4096}
    assert intent.batching is not None
    assert (intent.batching.max_batch_size, intent.batching.max_wait_ms) == (32, 5.0)
    rollout = intent.rollout
    assert rollout.strategy == "canary"
    assert rollout.steps == (10, 50, 100)
    assert rollout.interval_s == 120.0
    assert rollout.min_requests == 100
    assert rollout.shadow_sample == 0.1
    assert rollout.keep_previous_s == 600.0
    assert (intent.limits.rpm, intent.limits.tpm, intent.limits.concurrency) == (600, 200000, 32)
    assert intent.budget.monthly_usd == 500.0
    assert intent.consumers == ("team:support", "project:crm")
    header, customer = intent.routing.segments
    assert (header.kind, header.name, header.value, header.revision) == (
        "header",
        "x-tier",  # header names are lower-cased
        "beta",
        "candidate",
    )
    assert (customer.kind, customer.name, customer.value, customer.revision) == (
        "customer",
        None,
        "acme",
        "r3",
    )
    assert intent.routing.sticky == "customer"
    assert intent.routing.fallback == ("previous", "support-chat-small")


def test_minimal_file_gets_defaults() -> None:
    intent = parse_intent(MINIMAL)
    assert intent.project == "default"
    assert intent.environment == "sandbox"
    assert intent.outcome is None
    assert intent.data.sensitivity == "internal"
    assert intent.traffic.peak_rps is None
    assert intent.slo.p95_latency_ms is None
    assert intent.slo.availability is None
    assert intent.slo.max_error_rate == 0.01
    assert intent.resources.hardware == "auto"
    assert (intent.resources.replicas.min, intent.resources.replicas.max) == (1, 1)
    assert intent.runtime_options == {}
    assert intent.batching is None
    assert intent.rollout == Rollout()
    assert intent.rollout.strategy == "immediate"
    assert intent.rollout.steps == (10, 50, 100)
    assert intent.rollout.interval_s == 60.0
    assert intent.rollout.min_requests == 20
    assert intent.rollout.shadow_sample == 0.1
    assert intent.rollout.keep_previous_s == 300.0
    assert intent.limits.rpm is None
    assert intent.budget.monthly_usd is None
    assert intent.consumers == ()
    assert intent.routing.segments == ()
    assert intent.routing.sticky == "none"
    assert intent.routing.fallback == ()


def test_batching_section_fills_its_own_defaults() -> None:
    intent = parse_intent(MINIMAL + "batching: {}\n")
    assert intent.batching is not None
    assert (intent.batching.max_batch_size, intent.batching.max_wait_ms) == (32, 5.0)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("45", 45.0),
        ("7.5", 7.5),
    ],
)
def test_durations(written: str, seconds: float) -> None:
    intent = parse_intent(MINIMAL + f"rollout: {{interval: {written}, keep_previous: {written}}}\n")
    assert intent.rollout.interval_s == pytest.approx(seconds)
    assert intent.rollout.keep_previous_s == pytest.approx(seconds)
    assert parse_duration(written) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["abc", "5d", "-1s", "true", "[1]"])
def test_bad_duration(bad: str) -> None:
    assert _problems(MINIMAL + f"rollout:\n  interval: {bad}\n") == [("rollout.interval", 5)]


def test_routing_timeout_is_a_bounded_duration() -> None:
    assert parse_intent(MINIMAL + "routing: {timeout: 2m}\n").routing.timeout_s == 120.0
    assert parse_intent(MINIMAL).routing.timeout_s is None  # the server's default
    for bad in ("0s", "2h", "soon"):
        assert _problems(MINIMAL + f"routing:\n  timeout: {bad}\n") == [("routing.timeout", 5)]


def test_zero_interval_is_refused() -> None:
    assert _problems(MINIMAL + "rollout:\n  interval: 0s\n") == [("rollout.interval", 5)]


def test_replicas_as_int() -> None:
    intent = parse_intent(MINIMAL + "resources: {replicas: 3}\n")
    assert (intent.resources.replicas.min, intent.resources.replicas.max) == (3, 3)
    assert _problems(MINIMAL + "resources:\n  replicas: 65\n") == [("resources.replicas", 5)]


def test_to_dict_round_trips_and_uses_yaml_keys() -> None:
    intent = parse_intent(FULL)
    dumped = intent.to_dict()
    assert dumped["rollout"]["interval"] == 120.0
    assert dumped["rollout"]["keep_previous"] == 600.0
    assert "interval_s" not in dumped["rollout"]
    assert dumped["task"] == "chat"
    assert parse_intent(yaml.safe_dump(dumped)) == intent
    minimal = parse_intent(MINIMAL)
    assert parse_intent(yaml.safe_dump(minimal.to_dict())) == minimal


def test_digest_ignores_how_an_intent_is_written() -> None:
    first = parse_intent(
        "endpoint: e\ntask: chat\nmodel: m\nrollout: {interval: 2m, steps: [10, 100]}\n"
    )
    second = parse_intent(
        textwrap.dedent(
            """\
            # the same intent, written differently
            model: m
            rollout:
              steps:
                - 10
                - 100
              interval: 120
            task: "chat"
            endpoint: e
            """
        )
    )
    assert first == second
    digest = intent_digest(first)
    assert digest == intent_digest(second)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert intent_digest(parse_intent(FULL)) != digest


def test_digest_changes_when_a_field_changes() -> None:
    base = intent_digest(parse_intent(MINIMAL))
    assert intent_digest(parse_intent(MINIMAL + "rollout: {interval: 3m}\n")) != base
    assert intent_digest(parse_intent(MINIMAL.replace("model: m", "model: m:2"))) != base
    assert intent_digest(parse_intent(MINIMAL + "slo: {max_error_rate: 0.02}\n")) != base


def test_intent_is_frozen() -> None:
    intent = parse_intent(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        intent.endpoint = "other"  # type: ignore[misc]
    assert isinstance(intent, Intent)


def test_unknown_top_level_field() -> None:
    text = MINIMAL + "descripton: oops\n"
    assert _problems(text) == [("descripton", 4)]
    assert "descripton (line 4): unknown field" in _message(text)


def test_unknown_nested_field() -> None:
    text = MINIMAL + "slo:\n  p95_latency_ms: 10\n  p95_latncy_ms: 9\n"
    assert _problems(text) == [("slo.p95_latncy_ms", 6)]
    assert "slo.p95_latncy_ms (line 6): unknown field" in _message(text)


def test_internal_field_names_are_not_yaml_keys() -> None:
    assert _problems(MINIMAL + "rollout:\n  interval_s: 60\n") == [("rollout.interval_s", 5)]


def test_wrong_type() -> None:
    text = MINIMAL + "resources:\n  replicas:\n    min: two\n"
    assert _problems(text) == [("resources.replicas.min", 6)]
    assert "resources.replicas.min (line 6): must be an integer, got 'two'" in _message(text)
    assert "must be a number, got 'fast'" in _message(MINIMAL + "traffic: {peak_rps: fast}\n")
    assert "must be a string, got 5" in _message(MINIMAL.replace("model: m", "model: 5"))
    assert "must be a mapping, got 5" in _message(MINIMAL + "slo: 5\n")
    assert "must be a list, got 'team:a'" in _message(MINIMAL + "consumers: team:a\n")


def test_missing_required_fields() -> None:
    assert _problems("# no model\nendpoint: e\ntask: chat\n") == [("model", 1)]
    text = MINIMAL + "routing:\n  segments:\n    - revision: stable\n"
    assert _problems(text) == [("routing.segments[0].match", 6)]
    assert "routing.segments[0].match (line 6): required" in _message(text)


def test_steps_must_end_at_100() -> None:
    text = MINIMAL + "rollout:\n  strategy: canary\n  steps: [10, 50]\n"
    assert _problems(text) == [("rollout.steps", 6)]
    assert "rollout.steps (line 6): must end at 100, got [10, 50]" in _message(text)


def test_steps_must_increase() -> None:
    text = MINIMAL + "rollout:\n  steps: [50, 10, 100]\n"
    assert _problems(text) == [("rollout.steps", 5)]
    assert "must be strictly increasing, got [50, 10, 100]" in _message(text)


def test_step_out_of_range() -> None:
    text = MINIMAL + "rollout:\n  steps:\n    - 0\n    - 100\n"
    assert _problems(text) == [("rollout.steps[0]", 6)]


@pytest.mark.parametrize(
    "match",
    ["{customer: acme, key: k1}", "{}"],
)
def test_segment_needs_exactly_one_match_kind(match: str) -> None:
    text = MINIMAL + f"routing:\n  segments:\n    - revision: stable\n      match: {match}\n"
    assert _problems(text) == [("routing.segments[0].match", 7)]
    assert "needs exactly one of header, customer, key or project" in _message(text)


def test_header_match_is_one_pair() -> None:
    text = MINIMAL + "routing:\n  segments:\n    - revision: stable\n      match:\n"
    text += "        header: {a: b, c: d}\n"
    assert _problems(text) == [("routing.segments[0].match.header", 8)]


def test_bad_revision_selector() -> None:
    text = MINIMAL + (
        "routing:\n  segments:\n    - match: {project: crm}\n      revision: canidate\n"
    )
    assert _problems(text) == [("routing.segments[0].revision", 7)]
    assert "must be candidate, stable or rN (e.g. r3), got 'canidate'" in _message(text)


def test_bad_sticky() -> None:
    text = MINIMAL + "routing:\n  sticky: session\n"
    assert _problems(text) == [("routing.sticky", 5)]
    assert "'customer', 'key' or 'none'; got 'session'" in _message(text)


def test_bad_fallback_and_consumer() -> None:
    text = MINIMAL + "routing: {fallback: [Previous]}\nconsumers: [group:x]\n"
    assert _problems(text) == [("routing.fallback", 4), ("consumers", 5)]


@pytest.mark.parametrize("model", ["'m@'", "m:0", "Big-Model", "m:x"])
def test_bad_model_ref(model: str) -> None:
    assert _problems(f"endpoint: e\ntask: chat\nmodel: {model}\n") == [("model", 3)]


def test_bad_endpoint_name() -> None:
    text = "task: chat\nendpoint: Support Chat\nmodel: m\n"
    assert _problems(text) == [("endpoint", 2)]
    assert "invalid endpoint name 'Support Chat'" in _message(text)


def test_bad_task() -> None:
    assert _problems("endpoint: e\ntask: chatbot\nmodel: m\n") == [("task", 2)]


def test_shadow_sample_zero() -> None:
    text = MINIMAL + "rollout:\n  strategy: shadow\n  shadow_sample: 0\n"
    assert _problems(text) == [("rollout.shadow_sample", 6)]
    assert "rollout.shadow_sample (line 6): must be > 0, got 0" in _message(text)


def test_replicas_min_above_max() -> None:
    text = MINIMAL + "resources:\n  replicas: {min: 4, max: 2}\n"
    assert _problems(text) == [("resources.replicas", 5)]
    assert "min (4) must be <= max (2)" in _message(text)


def test_duplicate_key() -> None:
    text = "endpoint: a\ntask: chat\nmodel: m\n\n\n\nendpoint: b\n"
    assert _problems(text) == [("endpoint", 7)]
    assert "endpoint (line 7): duplicate key" in _message(text)
    nested = MINIMAL + "slo:\n  availability: 99\n  availability: 98\n"
    assert _problems(nested) == [("slo.availability", 6)]


def test_yaml_syntax_error() -> None:
    text = "endpoint: e\ntask: chat\nmodel: [m\nslo: {}\n"
    problems = _problems(text)
    assert len(problems) == 1
    field, line = problems[0]
    assert field == ""
    assert line in (4, 5)  # PyYAML notices the unclosed list where the next token is
    assert "not valid YAML" in _message(text)
    assert _problems("endpoint: e\ntask: chat: x\n") == [("", 2)]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    assert _problems(text) == [("", 1)]
    assert "empty" in _message(text)


def test_list_at_top_level() -> None:
    assert _problems("\n- endpoint: e\n") == [("", 2)]
    assert "the top level must be a mapping" in _message("- a\n")
    assert _problems("just a string\n") == [("", 1)]


def test_multiple_errors_reported_together() -> None:
    text = textwrap.dedent(
        """\
        endpoint: e
        task: chat
        model: m
        rollout:
          steps: [10, 50]
          bogus: 1
        resources:
          replicas: {min: two}
        endpoint: f
        """
    )
    assert _problems(text) == [
        ("rollout.steps", 5),
        ("rollout.bogus", 6),
        ("resources.replicas.min", 8),
        ("endpoint", 9),
    ]
    message = _message(text)
    assert message.splitlines()[0] == "modelport.yaml has 4 problems:"
    assert len(message.splitlines()) == 5
    assert "http" not in message  # no pydantic doc links


def test_filename_names_the_file_in_the_message() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_intent("- a\n", filename="deploy/chat.yaml")
    assert info.value.message.startswith("deploy/chat.yaml has 1 problem:\n")


# -- bounded input: what makes a small file expensive is refused before it is expanded -------


def test_aliases_are_refused_before_they_expand() -> None:
    # The "billion laughs": each line doubles the one before; 30 lines would be 2**30 items.
    lines = ['a0: &a0 ["lol", "lol"]'] + [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 30)
    ]
    text = MINIMAL + "runtime_options:\n" + "".join(f"  {line}\n" for line in lines)
    assert len(text) < 1200
    assert _problems(text) == [("", 5)]  # the first anchor, where it is written
    assert "anchors and aliases (&name, *name) are not allowed" in _message(text)


def test_an_alias_is_refused_on_its_line() -> None:
    text = MINIMAL + "slo: {max_error_rate: 0.02}\nconsumers: *shared\n"
    message = _message(text)
    assert "line 5: anchors and aliases" in message
    assert "not valid YAML" not in message  # valid YAML, just not allowed here


def test_an_anchor_alone_is_refused() -> None:
    assert _problems(MINIMAL + "runtime_options: &opts {n_ctx: 4096}\n") == [("", 4)]


def test_merge_keys_without_aliases_still_work() -> None:
    intent = parse_intent(MINIMAL + "runtime_options: {<<: {n_ctx: 1}, seed: 2}\n")
    assert intent.runtime_options == {"n_ctx": 1, "seed": 2}


@pytest.mark.parametrize("depth", [33, 500, 5000])
def test_deep_flow_nesting_is_refused(depth: int) -> None:
    text = MINIMAL + "runtime_options: {x: " + "[" * depth + "]" * depth + "}\n"
    message = _message(text)  # not a RecursionError: refused while composing
    assert "line 4: lists and mappings nest more than 32 levels deep" in message


def test_deep_block_nesting_is_refused_at_the_line_that_passes_the_limit() -> None:
    nested = "".join("  " * (i + 1) + f"k{i}:\n" for i in range(40)) + "  " * 41 + "v: 1\n"
    text = MINIMAL + "runtime_options:\n" + nested
    # runtime_options' mapping is level 2 (the file is 1), k29's value is level 32, k30's 33.
    assert _problems(text) == [("", 36)]


def test_nesting_up_to_the_limit_is_accepted() -> None:
    # The top-level mapping and runtime_options' own mapping are 2 of the 32 levels.
    value = "[" * 30 + "]" * 30
    intent = parse_intent(MINIMAL + f"runtime_options: {{x: {value}}}\n")
    assert "x" in intent.runtime_options


def test_file_over_the_size_limit_is_refused() -> None:
    from modelport.core.intent import MAX_INTENT_BYTES

    text = MINIMAL + "outcome: '" + "x" * MAX_INTENT_BYTES + "'\n"
    message = _message(text)
    assert f"line 1: the file is {len(text)} bytes; the limit is {MAX_INTENT_BYTES}" in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("9" * 5000, "cannot read '99999"),  # Python refuses int() of 4300+ digits
        ("2024-13-45", "cannot read '2024-13-45': month must be in 1..12"),
    ],
)
def test_values_yaml_cannot_construct_are_field_errors_not_crashes(
    value: str, fragment: str
) -> None:
    message = _message(MINIMAL + f"runtime_options: {{x: {value}}}\n")
    assert "line 4: not valid YAML: " + fragment in message
    assert len(message) < 400  # the value is cut short


@pytest.mark.parametrize(("text", "line"), [("\x0e", 1), (MINIMAL + "outcome: a\x05b\n", 4)])
def test_control_characters_are_field_errors_not_crashes(text: str, line: int) -> None:
    message = _message(text)
    assert f"line {line}: not valid YAML: character 0x" in message
    assert "is not allowed" in message


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ("rollout: {interval: .inf}", "rollout.interval", "must be a duration"),
        ("rollout: {keep_previous: .nan}", "rollout.keep_previous", "must be a duration"),
        ("rollout: {interval: " + "9" * 400 + "}", "rollout.interval", "must be a duration"),
        ('rollout: {interval: "' + "9" * 400 + 'h"}', "rollout.interval", "must be a duration"),
        ("traffic: {peak_rps: .inf}", "traffic.peak_rps", "must be a finite number, got inf"),
        ("slo: {availability: -.inf}", "slo.availability", "must be a finite number"),
        ("budget: {monthly_usd: .nan}", "budget.monthly_usd", "must be a finite number"),
    ],
)
def test_infinite_and_overflowing_numbers_are_refused(
    extra: str, field: str, fragment: str
) -> None:
    # An interval of .inf stalls a rollout forever; 400 digits raised OverflowError (a 500).
    assert _problems(MINIMAL + extra + "\n") == [(field, 4)]
    assert fragment in _message(MINIMAL + extra + "\n")
