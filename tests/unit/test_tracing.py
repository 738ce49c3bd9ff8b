"""Tracing and structured logs, in process: the gateway continues a client's trace, sends its
context to the replica, and exports spans to a real OTLP/HTTP receiver on loopback; when no
endpoint is set, nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic, Upstream
from modelport.gateway import GatewayApp, UpstreamPool
from modelport.observability import logs, tracing
from modelport.observability.usage import RecentUsage
from tests.unit.loopback import read_request
from tests.unit.otlp_receiver import otlp_receiver

KEY = "mp_testkey"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
async def replica() -> AsyncIterator[tuple[Upstream, list[bytes]]]:
    """A V2 replica on loopback that answers 200 with two rows, keeping each request."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                requests.append(await read_request(reader))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"x-modelport-units: rows=2\r\ncontent-length: 2\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield Upstream("127.0.0.1", server.sockets[0].getsockname()[1]), requests
    server.close()


async def _infer(app: Any, headers: dict[str, str]) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/ep/infer",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def _gateway(pool: UpstreamPool, upstream: Upstream) -> GatewayApp:
    app = GatewayApp(pool, max_body_bytes=4096, usage=RecentUsage())
    app.publish_keys({hashlib.sha256(KEY.encode()).hexdigest(): KeyPrincipal("k1", "p", "n")})
    route = Route("ep", "m", 3, b"{}", b"secret", (upstream,), task="tabular")
    app.publish_routes(RoutingSnapshot.of([Traffic.single(route)]))
    return app


def _header(request: bytes, name: bytes) -> bytes | None:
    for line in request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def test_the_gateway_continues_the_trace_and_hands_it_to_the_replica(replica) -> None:
    upstream, requests = replica
    pool = UpstreamPool()
    headers = {"authorization": f"Bearer {KEY}", "traceparent": TRACEPARENT, "x-request-id": "r-1"}
    with otlp_receiver() as receiver:
        tracing.configure_tracing(receiver.url, "modelport-test")
        try:
            assert tracing.ENABLED
            app = tracing.traced_gateway(_gateway(pool, upstream))
            assert await _infer(app, headers) == 200
        finally:
            tracing.shutdown_tracing()  # sends what is batched
            await pool.close()
        assert not tracing.ENABLED
    assert receiver.paths == ["/v1/traces"]
    spans = {span.kind: span for span in receiver.spans}
    server, client = spans["server"], spans["client"]
    assert server.service == "modelport-test"
    assert (server.trace_id, server.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert server.name == "POST /v2/models/{model}/infer"
    assert (
        server.attributes
        | {
            "http.response.status_code": 200,
            "modelport.request_id": "r-1",
            "modelport.endpoint": "ep",
            "modelport.revision": "r1",
            "gen_ai.operation.name": "predict",
            "gen_ai.request.model": "ep",
            "gen_ai.response.model": "m",
            "modelport.usage.rows": 2,
        }
        == server.attributes
    )
    assert (client.trace_id, client.parent_span_id) == (TRACE_ID, server.span_id)
    assert client.name == "predict ep"
    assert client.attributes["server.port"] == upstream.port
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["modelport.usage.rows"] == 2
    # The replica continues the client span: its traceparent names it as the parent.
    sent = _header(requests[0], b"traceparent")
    assert sent == f"00-{TRACE_ID}-{client.span_id}-01".encode()


STREAM = [
    b": modelport-units input_tokens=3\n\n",
    b'id: 1\ndata: {"choices": [{"delta": {"content": "hi"}}]}\n\n',
    b": modelport-units input_tokens=3,output_tokens=1\n\n",
    b"data: [DONE]\n\n",
]


async def test_a_streams_spans_carry_its_tokens() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in STREAM)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream = Upstream("127.0.0.1", server.sockets[0].getsockname()[1])
    pool = UpstreamPool()
    app = GatewayApp(pool, max_body_bytes=4096, usage=RecentUsage())
    app.publish_keys({hashlib.sha256(KEY.encode()).hexdigest(): KeyPrincipal("k1", "p", "n")})
    route = Route("chat", "llm", 2, b"{}", b"secret", (upstream,), task="chat")
    app.publish_routes(RoutingSnapshot.of([Traffic.single(route)]))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {KEY}".encode())],
    }
    body = b'{"model": "chat", "messages": [], "stream": true}'
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        pass

    with otlp_receiver() as receiver:
        tracing.configure_tracing(receiver.url, "modelport-test")
        try:
            await tracing.traced_gateway(app)(scope, receive, send)
        finally:
            tracing.shutdown_tracing()
            await pool.close()
            server.close()
    spans = {span.kind: span for span in receiver.spans}
    for span in spans.values():
        assert span.attributes["gen_ai.usage.input_tokens"] == 3
        assert span.attributes["gen_ai.usage.output_tokens"] == 1
        assert span.attributes["gen_ai.response.model"] == "llm"
        assert span.attributes["gen_ai.operation.name"] == "chat"
    assert spans["server"].name == "POST /v1/chat/completions"
    assert spans["client"].name == "chat chat"


async def test_without_an_endpoint_nothing_is_traced_or_propagated(replica) -> None:
    upstream, requests = replica
    tracing.configure_tracing("", "modelport-test")
    assert not tracing.ENABLED
    pool = UpstreamPool()
    app = tracing.traced_gateway(_gateway(pool, upstream))
    headers = {"authorization": f"Bearer {KEY}", "traceparent": TRACEPARENT}
    assert await _infer(app, headers) == 200
    await pool.close()
    assert _header(requests[0], b"traceparent") is None


def _loaded(modules: str) -> list[str]:
    code = f"import sys, {modules}\nprint(' '.join(m for m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in run.stdout.split() if m.startswith("opentelemetry")]


def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off() -> None:
    # The data plane and a replica import none of it; the server only what FastAPI itself
    # imports (its API, for FastAPI's own telemetry), never the SDK or an exporter.
    assert _loaded("modelport.gateway, modelport.worker.__main__") == []
    heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")
    assert [m for m in _loaded("modelport.server") if m.startswith(heavy)] == []


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
)
def test_the_traces_url_of_a_collector(endpoint: str, url: str) -> None:
    assert tracing._traces_url(endpoint) == url


def test_span_names_keep_endpoint_names_out() -> None:
    assert tracing._route_name("/v2/models/ep/infer") == "/v2/models/{model}/infer"
    assert (
        tracing._route_name("/v2/models/ep/versions/r2/infer")
        == "/v2/models/{model}/versions/{version}/infer"
    )
    assert tracing._route_name("/v1/chat/completions") == "/v1/chat/completions"


async def test_json_log_lines_carry_the_request_id() -> None:
    formatter = logs.JsonFormatter()

    def line(message: str) -> dict[str, Any]:
        record = logging.LogRecord("modelport.test", logging.WARNING, "f", 1, message, (), None)
        return dict(orjson.loads(formatter.format(record)))

    async def serving(request_id: bytes) -> dict[str, Any]:
        logs.bind_request(request_id)
        return line("inference failed")

    # Each request runs in a task of its own: its id never leaks into another's lines.
    first, second = await asyncio.gather(
        asyncio.create_task(serving(b"abc-1")), asyncio.create_task(serving(b"abc-2"))
    )
    assert (first["request_id"], second["request_id"]) == ("abc-1", "abc-2")
    assert first["level"] == "WARNING" and first["logger"] == "modelport.test"
    assert first["message"] == "inference failed" and first["time"].endswith("Z")
    assert "request_id" not in line("outside any request")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("m", logging.ERROR, "f", 1, "failed", (), sys.exc_info(), None)
    entry = orjson.loads(formatter.format(record))
    assert "ValueError: boom" in entry["exception"] and "\n" not in formatter.format(record)
