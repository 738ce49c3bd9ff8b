"""Units from servers that report OpenAI ``usage`` (vLLM, external OpenAI-compatible servers):
read from whole answers and from streams, whose usage event a client that did not ask for it
never sees. The gateway runs in process against a loopback server that speaks OpenAI's
stream format (the unit under test is the gateway's reading of it)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelport.core.routing import (
    KeyPrincipal,
    RemoteTarget,
    Route,
    RoutingSnapshot,
    Traffic,
    Upstream,
)
from modelport.core.usage import UNITS_SSE_PREFIX, Units, UsageRecord
from modelport.gateway import GatewayApp, UpstreamPool
from modelport.gateway.forwarding import Call, request_for
from modelport.gateway.openai_usage import OpenAIStreamUsage, units_from_body
from tests.unit.loopback import read_request

KEY = "mp_testkey"
USAGE = {"prompt_tokens": 33, "completion_tokens": 12, "total_tokens": 45}


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _delta(content: str) -> bytes:
    return _event({"object": "chat.completion.chunk", "choices": [{"delta": {"content": content}}]})


USAGE_EVENT = _event({"object": "chat.completion.chunk", "choices": [], "usage": USAGE})
STREAM = [
    _event({"choices": [{"delta": {"role": "assistant"}}]}),
    _delta("Hello"),
    _delta(" there"),
    _event({"choices": [{"delta": {}, "finish_reason": "length"}]}),
    USAGE_EVENT,
    b"data: [DONE]\n\n",
]


# -- whole answers ----------------------------------------------------------------------------


def test_units_from_a_chat_answer() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "hi"}}], "usage": USAGE})
    assert units_from_body(body) == Units(input_tokens=33, output_tokens=12)


def test_units_from_a_large_embeddings_answer_read_from_its_tail() -> None:
    data = [{"embedding": [0.125] * 50_000, "index": 0}]
    body = orjson.dumps({"data": data, "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    assert units_from_body(body) == Units(input_tokens=7)


def test_units_from_answers_of_other_shapes() -> None:
    nested = {
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
        "model": "x",
    }
    assert units_from_body(orjson.dumps(nested)) == Units(input_tokens=5, output_tokens=2)
    responses_api = {"usage": {"input_tokens": 4, "output_tokens": 9}}
    assert units_from_body(orjson.dumps(responses_api)) == Units(input_tokens=4, output_tokens=9)
    transcription = {"text": "hi", "usage": {"type": "duration", "seconds": 3}}
    assert units_from_body(orjson.dumps(transcription)) == Units(audio_seconds=3.0)
    # Content that talks about usage is not usage.
    talk = {"choices": [{"text": '{"usage": {"prompt_tokens": 99}}'}], "usage": USAGE}
    assert units_from_body(orjson.dumps(talk)) == Units(input_tokens=33, output_tokens=12)


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"usage": null}', b'{"usage": {"prompt_tokens": -3}}',
     b'{"usage": {"prompt_tokens": true}}', b'{"choices": []}'],
)  # fmt: skip
def test_answers_without_usable_usage_count_one_request(body: bytes) -> None:
    assert units_from_body(body) == Units()


# -- what is sent upstream --------------------------------------------------------------------


def _call(payload: dict[str, Any]) -> Call:
    call = Call({"headers": []}, b"id", KeyPrincipal("k", "p", "n"), 0.0, 60.0)
    call.api_path, call.body, call.payload = "/v1/chat/completions", orjson.dumps(payload), payload
    return call


def _route(remote: RemoteTarget | None = None, *, openai_usage: bool = True) -> Route:
    return Route("chat", "m", 1, b"{}", b"t", task="chat", remote=remote, openai_usage=openai_usage)


async def test_a_stream_asks_a_server_that_reports_usage_for_it() -> None:
    payload = {"model": "chat", "messages": [], "stream": True}
    path, body = request_for(_route(), _call(payload))  # a vLLM replica
    assert path == "/v1/chat/completions"
    assert orjson.loads(body) == {**payload, "stream_options": {"include_usage": True}}
    remote = RemoteTarget(protocol="openai", path_prefix="/api/v1", model="gpt-x")
    mine = {**payload, "stream_options": {"include_usage": False, "include_obfuscation": True}}
    path, body = request_for(_route(remote), _call(mine))
    assert path == "/api/v1/chat/completions"
    assert orjson.loads(body) == {
        **payload,
        "model": "gpt-x",
        "stream_options": {"include_usage": True, "include_obfuscation": True},
    }


async def test_other_calls_go_unchanged() -> None:
    whole = _call({"model": "chat", "messages": []})
    assert request_for(_route(), whole)[1] is whole.body  # a whole answer has its usage
    stream = _call({"model": "chat", "messages": [], "stream": True})
    assert request_for(_route(openai_usage=False), stream)[1] is stream.body  # our workers
    odd = _call({"model": "chat", "messages": [], "stream": True, "stream_options": "yes"})
    assert orjson.loads(request_for(_route(), odd)[1])["stream_options"] == "yes"


# -- streams ----------------------------------------------------------------------------------


async def _relay(chunks: list[bytes], *, hide_usage: bool) -> tuple[bytes, Units, int]:
    reader = OpenAIStreamUsage(hide_usage=hide_usage)

    async def upstream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    relayed = [chunk async for chunk in reader.relay(upstream())]
    assert relayed[-1].startswith(UNITS_SSE_PREFIX)
    units = Units.decode(relayed[-1][len(UNITS_SSE_PREFIX) :].strip())
    return b"".join(relayed[:-1]), units, reader.content_events


async def test_the_usage_event_is_read_and_kept_only_for_a_client_that_asked() -> None:
    hidden, units, _ = await _relay(STREAM, hide_usage=True)
    assert hidden == b"".join(e for e in STREAM if e != USAGE_EVENT)
    assert units == Units(input_tokens=33, output_tokens=12)
    shown, units, _ = await _relay(STREAM, hide_usage=False)
    assert shown == b"".join(STREAM)  # unchanged, byte for byte
    assert units == Units(input_tokens=33, output_tokens=12)


async def test_events_split_or_joined_across_chunks_and_crlf_lines() -> None:
    whole = b"".join(STREAM).replace(b"\n\n", b"\r\n\r\n")
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]  # events cut anywhere
    relayed, units, events = await _relay(pieces, hide_usage=True)
    assert relayed == whole.replace(USAGE_EVENT.replace(b"\n\n", b"\r\n\r\n"), b"")
    assert units == Units(input_tokens=33, output_tokens=12) and events == 2
    relayed, _, _ = await _relay([whole], hide_usage=True)  # all events in one chunk
    assert b'"usage"' not in relayed


async def test_a_server_that_ignores_the_option_is_metered_by_its_content_events() -> None:
    # llama-cpp-python's server, for one: one event per token, and no usage event.
    without = [e for e in STREAM if e != USAGE_EVENT]
    relayed, units, _ = await _relay([*without, b": ping\n\n"], hide_usage=True)
    assert relayed == b"".join(without) + b": ping\n\n"
    assert units == Units(output_tokens=2)


async def test_usage_carried_by_a_content_event_is_read_and_passed_on() -> None:
    both = _event({"choices": [{"delta": {"content": "!"}}], "usage": USAGE})
    relayed, units, events = await _relay([both], hide_usage=True)
    assert relayed == both and events == 1
    assert units == Units(input_tokens=33, output_tokens=12)


# -- through the gateway ----------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, record: UsageRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def openai_server() -> AsyncIterator[tuple[Upstream, list[bytes]]]:
    """Answers every request as an OpenAI server would: with usage when asked for it."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                requests.append(request)
                payload = orjson.loads(request.split(b"\r\n\r\n", 1)[1])
                if not payload.get("stream"):
                    body = orjson.dumps({"choices": [], "usage": USAGE})
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                    continue
                asked = (payload.get("stream_options") or {}).get("include_usage")
                events = [e for e in STREAM if asked or e != USAGE_EVENT]
                chunks = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield Upstream("127.0.0.1", server.sockets[0].getsockname()[1]), requests
    server.close()


async def _ask(app: GatewayApp, payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {KEY}".encode())],
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    return b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("remote", [False, True], ids=["vllm-replica", "external-server"])
async def test_the_gateway_meters_the_upstreams_usage(openai_server, remote: bool) -> None:
    upstream, requests = openai_server
    target = RemoteTarget(protocol="openai", path_prefix="/v1", model="up") if remote else None
    route = Route(
        "chat", "m", 1, b"{}", b"t", (upstream,), task="chat", remote=target, openai_usage=True
    )
    sink = _Sink()
    pool = UpstreamPool()
    app = GatewayApp(pool, max_body_bytes=4096, usage=sink)
    app.publish_keys({hashlib.sha256(KEY.encode()).hexdigest(): KeyPrincipal("k1", "p", "n")})
    app.publish_routes(RoutingSnapshot.of([Traffic.single(route)]))
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    await _ask(app, chat)
    plain = await _ask(app, {**chat, "stream": True})
    assert b'"usage"' not in plain and plain.endswith(b"data: [DONE]\n\n")
    asked = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    assert USAGE_EVENT in await _ask(app, asked)
    await pool.close()
    assert [r.units for r in sink.records] == [Units(input_tokens=33, output_tokens=12)] * 3
    assert [r.streamed for r in sink.records] == [False, True, True]
    assert b'"include_usage":true' in requests[1]  # asked upstream although the client did not
