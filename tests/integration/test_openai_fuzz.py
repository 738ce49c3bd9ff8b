"""Property-based fuzzing of the OpenAI routes against a real server: whatever the body (wrong
types, nulls, nesting, huge numbers, unknown fields, odd JSON Schemas), the answer is never a
5xx and no replica restarts."""

from __future__ import annotations

import copy
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import RunningServer, demo_server
from tests.integration.test_openai_params import demo_wheel_roots

pytestmark = pytest.mark.integration

ENDPOINTS = ("chat-small", "embed-small")
CONTEXT = 2048  # chat-small's n_ctx

# -- JSON values -------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 4, 20, 21, 100, 2048, 2**31, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "text", "json_object", "json_schema", "auto", "none", "required"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"type": "object", "properties": {"a": value}} if depth % 2 else [value]
    return value


_deep = st.integers(min_value=1, max_value=600).map(_nested)
_any = st.one_of(_values, _deep)

# -- schemas (for response_format and tools) ---------------------------------------------------

_keywords = st.sampled_from(
    [
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
        "pattern", "minLength", "maxLength", "format", "minimum", "title", "not",
    ]
)  # fmt: skip
_schema_values = st.one_of(
    _values,
    st.sampled_from(
        [
            "object", "string", "integer", "array", "number", "boolean", "null", "^a+$",
            "^[a-z]{2,5}$", "#/$defs/A", "#", "date-time", "email", "uuid",
        ]
    ),
)  # fmt: skip
_schemas = st.recursive(
    st.dictionaries(_keywords, _schema_values, max_size=4),
    lambda inner: st.one_of(
        st.dictionaries(_keywords, inner, max_size=3),
        st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
            st.text(min_size=1, max_size=6), inner, max_size=3)}),
        st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$defs": st.dictionaries(st.sampled_from(["A", "B"]), inner,
                                                        max_size=2), "$ref": st.just("#/$defs/A")}),
    ),
    max_leaves=10,
)  # fmt: skip

# -- bodies ------------------------------------------------------------------------------------

_content_parts = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": _any}),
        st.fixed_dictionaries({"type": _values, "text": st.text(max_size=10)}),
        st.dictionaries(st.text(max_size=6), _values, max_size=3),
        _values,
    ),
    max_size=3,
)
_messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]),
                "content": st.one_of(st.text(max_size=30), _content_parts, _any),
            }
        ),
        st.fixed_dictionaries(
            {
                "role": st.just("assistant"),
                "content": st.none(),
                "tool_calls": st.one_of(_any, st.just([{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{\"x\": 1"}}])),
            }
        ),
        _any,
    ),
    max_size=3,
)  # fmt: skip
_tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.one_of(st.just("function"), _values),
            "function": st.fixed_dictionaries(
                {"name": st.one_of(st.just("f"), st.text(max_size=70)), "parameters": _schemas}
            ),
        }
    ),
    max_size=2,
)
_response_formats = st.one_of(
    _any,
    st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries(
                {"name": st.just("s"), "schema": _schemas,
                 "strict": st.one_of(st.booleans(), _values)}
            ),
        }
    ),
)  # fmt: skip

CHAT_FIELDS = {
    "messages": _messages,
    "temperature": _any,
    "top_p": _any,
    "n": _any,
    "stop": _any,
    "seed": _any,
    "logit_bias": st.one_of(_any, st.dictionaries(st.text(max_size=8), _values, max_size=3)),
    "logprobs": _any,
    "top_logprobs": _any,
    "presence_penalty": _any,
    "frequency_penalty": _any,
    "response_format": _response_formats,
    "tools": st.one_of(_tools, _any),
    "tool_choice": st.one_of(
        _any, st.just({"type": "function", "function": {"name": "f"}}), st.just("required")
    ),
    "parallel_tool_calls": _any,
    "stream": st.one_of(st.booleans(), _any),
    "stream_options": _any,
    "user": _any,
    "max_completion_tokens": _any,
    "model": _any,
    "unknown_field": _any,
}
COMPLETION_FIELDS = {
    "prompt": st.one_of(st.text(max_size=40), st.lists(st.integers(-5, 60000), max_size=5), _any),
    "echo": _any,
    "logprobs": _any,
    "suffix": _any,
    "best_of": _any,
    "temperature": _any,
    "stop": _any,
    "seed": _any,
    "logit_bias": _any,
    "stream": st.one_of(st.booleans(), _any),
    "n": _any,
    "unknown_field": _any,
}
EMBEDDING_FIELDS = {
    "input": st.one_of(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=4), _any),
    "encoding_format": _any,
    "dimensions": _any,
    "user": _any,
    "unknown_field": _any,
}


def _mutated(base: dict[str, Any], fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The base body with some fields replaced by generated values and some dropped."""

    def build(changes: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
        body = {**copy.deepcopy(base), **changes}
        for name in dropped:
            body.pop(name, None)
        return body

    return st.builds(
        build,
        st.fixed_dictionaries({}, optional=fields),
        st.lists(st.sampled_from(sorted(base)), max_size=1),
    )


def _short(body: dict[str, Any]) -> dict[str, Any]:
    """At most one generated token when the body would generate: keep a fuzzed max_tokens
    only where it is refused anyway (not a positive integer, or beyond the context)."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= CONTEXT:
            body[name] = 1
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = 1
    return body


# -- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    env = {
        "MODELPORT_DEMO_MODELS": ",".join(ENDPOINTS),
        "MODELPORT_ARTIFACT_ROOTS": demo_wheel_roots(),
    }
    with demo_server(tmp_path_factory.mktemp("fuzz") / "home", *ENDPOINTS, env=env) as server:
        with server.client() as admin:
            # "user" is fuzzed too: any customer it names is allowed, so the body is what
            # the fuzzing reaches.
            key = admin.create_key("default", "fuzz", permissions=["any_customer"])["key"]
        yield server, key


def _replicas(server: RunningServer) -> dict[str, list[tuple[int | None, int]]]:
    with server.client() as admin:
        return {
            name: [(r["pid"], r["restarts"]) for r in admin.get_endpoint(name)["replica_status"]]
            for name in ENDPOINTS
        }


def _last_errors(server: RunningServer) -> dict[str, list[str | None]]:
    """Why each replica last stopped: the exit and the tail of its log."""
    with server.client() as admin:
        return {
            name: [r.get("last_error") for r in admin.get_endpoint(name)["replica_status"]]
            for name in ENDPOINTS
        }


_FUZZ = settings(
    max_examples=int(os.environ.get("MODELPORT_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
    database=None,
)  # fmt: skip


# The last bodies sent, and those sent up to the first 5xx: Hypothesis reports the smallest
# failing body, which after a replica crash is any body at all (the replica is down), so the
# body that crashed it has to be kept here to be seen.
_SENT: deque[tuple[str, dict[str, Any]]] = deque(maxlen=4)
_FIRST_FAILURE: list[tuple[str, dict[str, Any]]] = []


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    try:
        data = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits: send them as text
        import json

        data = json.dumps(body).encode()
    _SENT.append((path, body))
    response = client.post(path, content=data, headers={"content-type": "application/json"})
    if response.status_code >= 500 and not _FIRST_FAILURE:
        _FIRST_FAILURE.extend(_SENT)
    assert response.status_code < 500, (
        body,
        response.status_code,
        response.text[:500],
        "bodies sent up to the first 5xx:",
        _FIRST_FAILURE,
    )


@pytest.fixture(scope="module")
def http(fuzz_server: tuple[RunningServer, str]) -> Iterator[httpx.Client]:
    server, key = fuzz_server
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def before(fuzz_server: tuple[RunningServer, str]) -> dict[str, list[tuple[int | None, int]]]:
    return _replicas(fuzz_server[0])


CHAT_BASE = {"model": "chat-small", "messages": [{"role": "user", "content": "Hi"}]}


@_FUZZ
@given(body=_mutated(CHAT_BASE, CHAT_FIELDS))
def test_chat_bodies_never_5xx(http: httpx.Client, before: dict, body: dict[str, Any]) -> None:
    body["model"] = "chat-small"  # a fuzzed model name is the gateway's 404, tested elsewhere
    _post(http, "/v1/chat/completions", _short(body))


@_FUZZ
@given(body=_mutated({"model": "chat-small", "prompt": "Hi"}, COMPLETION_FIELDS))
def test_completion_bodies_never_5xx(
    http: httpx.Client, before: dict, body: dict[str, Any]
) -> None:
    body["model"] = "chat-small"
    _post(http, "/v1/completions", _short(body))


@_FUZZ
@given(body=_mutated({"model": "embed-small", "input": "a cat"}, EMBEDDING_FIELDS))
def test_embedding_bodies_never_5xx(http: httpx.Client, before: dict, body: dict[str, Any]) -> None:
    body["model"] = "embed-small"
    _post(http, "/v1/embeddings", body)


@_FUZZ
@given(
    schema=_schemas,
    as_tool=st.booleans(),
    strict=st.booleans(),
    choice=st.sampled_from(["auto", "required", "f"]),
)
def test_json_schemas_never_5xx(
    http: httpx.Client, before: dict, schema: dict, as_tool: bool, strict: bool, choice: str
) -> None:
    """Valid bodies around odd schemas: the grammar path (conversion, llama.cpp's parser,
    constrained sampling) is where a replica could crash."""
    body: dict[str, Any] = {**CHAT_BASE, "max_tokens": 2}
    if as_tool:
        function = {"name": "f", "parameters": schema, "strict": strict}
        body["tools"] = [{"type": "function", "function": function}]
        body["tool_choice"] = (
            {"type": "function", "function": {"name": "f"}} if choice == "f" else choice
        )
    else:
        spec = {"name": "s", "schema": schema, "strict": strict}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    _post(http, "/v1/chat/completions", body)


def test_no_replica_restarted(fuzz_server: tuple[RunningServer, str], before: dict) -> None:
    """Runs after the fuzzing above (file order): the same processes, no restarts."""
    after = _replicas(fuzz_server[0])
    assert after == before, (_last_errors(fuzz_server[0]), _FIRST_FAILURE)
