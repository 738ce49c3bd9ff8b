"""External OpenAI servers (and vLLM replicas) get every parameter a client sent: the gateway
rewrites the model name of an external server and nothing else."""

from __future__ import annotations

import orjson

from modelport.core.routing import KeyPrincipal, RemoteTarget, Route
from modelport.gateway.forwarding import Call, request_for

BODY = {
    "model": "chat",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "required",
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"42": -100},
    "seed": 7,
    "n": 3,
    "vendor_specific": {"anything": [1, 2]},
}


def _route(remote: RemoteTarget | None) -> Route:
    return Route("chat", "m", 1, b"{}", b"t", task="chat", remote=remote)


def _call(body: bytes) -> Call:
    call = Call({"headers": []}, b"id", KeyPrincipal("k", "p", "n"), 0.0, 60.0)
    call.api_path, call.body, call.payload = "/v1/chat/completions", body, BODY
    return call


async def test_external_server_gets_every_parameter_with_its_own_model_name() -> None:
    remote = RemoteTarget(protocol="openai", path_prefix="/v1", model="gpt-x")
    body = orjson.dumps(BODY)
    path, sent = request_for(_route(remote), _call(body))
    assert path == "/v1/chat/completions"
    assert orjson.loads(sent) == {**BODY, "model": "gpt-x"}


async def test_replicas_get_the_body_unchanged() -> None:
    body = orjson.dumps(BODY)
    assert request_for(_route(None), _call(body)) == (
        "/v1/chat/completions",
        body,
    )
