"""The gateway meters each call before its answer (or a stream's last chunk) leaves, with
who, what, how long and how much; loopback replicas, the real gateway and upstream client."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic, Upstream
from modelport.core.usage import Units, UsageRecord
from modelport.gateway import GatewayApp, UpstreamPool
from modelport.gateway.streaming import relay_stream
from tests.unit.loopback import read_request

KEY = "mp_meteringkey"
AUTH = [(b"authorization", f"Bearer {KEY}".encode())]
SSE = [
    b"id: 1\ndata: {}\n\n",
    b"id: 2\ndata: {}\n\n",
    b": modelport-units input_tokens=5,output_tokens=2\n\n",
    b"data: [DONE]\n\n",
]


_WRITERS: list[asyncio.StreamWriter] = []


async def _replica(chunks: list[bytes] | None) -> asyncio.Server:
    """A loopback replica: a JSON answer reporting 3 rows, or ``chunks`` as an SSE stream."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _WRITERS.append(writer)
        try:
            while True:
                await read_request(reader)
                if chunks is None:
                    body = b'{"ok":true}'
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"x-modelport-units: rows=3\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for chunk in chunks:
                    await asyncio.sleep(0.01)
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream_pool = UpstreamPool()
    yield upstream_pool
    await upstream_pool.close()
    while _WRITERS:
        writer = _WRITERS.pop()
        writer.close()
        await writer.wait_closed()


class _Sink:
    """Records each usage record with how many ASGI messages had been sent by then."""

    def __init__(self, sent: list[dict[str, Any]]) -> None:
        self.sent = sent
        self.records: list[tuple[UsageRecord, int]] = []

    def record(self, record: UsageRecord) -> None:
        self.records.append((record, len(self.sent)))


async def test_a_v2_call_is_metered_before_its_answer_is_sent(pool: UpstreamPool) -> None:
    server = await _replica(None)
    port = server.sockets[0].getsockname()[1]
    sent: list[dict[str, Any]] = []
    sink = _Sink(sent)
    app = GatewayApp(pool, max_body_bytes=1024, usage=sink)
    principal = KeyPrincipal("k1", "proj", "n", team="search", customers=frozenset({"acme"}))
    app.publish_keys({hashlib.sha256(KEY.encode()).hexdigest(): principal})
    route = Route("ep", "iris", 4, b"{}", b"secret", (Upstream("127.0.0.1", port),), task="tabular")
    app.publish_routes(RoutingSnapshot.of([Traffic.single(route)]))
    messages = [{"type": "http.request", "body": b'{"inputs":[]}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/ep/infer",
        "headers": [*AUTH, (b"x-modelport-customer", b"acme")],
    }
    await app(scope, receive, send)
    server.close()
    assert sent[0]["status"] == 200
    ((record, sent_before),) = sink.records
    assert sent_before == 0  # journaled before the first byte of the answer left
    assert (record.endpoint, record.revision, record.model, record.model_version) == (
        "ep",
        "r1",
        "iris",
        4,
    )
    assert (record.task, record.key_id, record.project, record.team) == (
        "tabular",
        "k1",
        "proj",
        "search",
    )
    assert record.customer == "acme" and record.status == 200 and record.units.rows == 3
    assert len(record.event_id) == 16 and record.judged and not record.streamed
    assert 0 < record.upstream_ms <= record.latency_ms
    assert record.ttft_ms is None


async def test_a_stream_is_metered_before_its_last_chunk(pool: UpstreamPool) -> None:
    server = await _replica(SSE)
    upstream = Upstream("127.0.0.1", server.sockets[0].getsockname()[1])
    route = Route("ep", "chat", 1, b"{}", b"secret", (upstream,), task="chat")
    stream = await pool.open(upstream, "POST", "/v1/chat/completions", [], b"{}")
    sent: list[dict[str, Any]] = []
    metered: list[tuple[int, Units, float | None, list[dict[str, Any]]]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def meter(status: int, units: Units, first_token_at: float | None) -> None:
        metered.append((status, units, first_token_at, list(sent)))

    await relay_stream(stream, receive, send, route, [], 5.0, meter)
    server.close()
    ((status, units, first_token_at, before),) = metered
    assert status == 200
    assert (units.input_tokens, units.output_tokens) == (5, 2)
    assert first_token_at is not None
    assert all(m.get("more_body", True) for m in before)  # the end was not sent yet
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert len(sent) == len(before) + 1
