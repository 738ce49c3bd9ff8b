"""The gateway's admission hook, in process with a loopback replica: what a guard is told,
the headers it adds, and that its hold is released exactly once on every way out."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelport.core.errors import TooManyRequests
from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic, Upstream
from modelport.core.usage import UNITS_SSE_PREFIX, Units
from modelport.gateway import GatewayApp, UpstreamPool
from modelport.governance.admission import Admission, Caller
from tests.unit.loopback import read_request

KEY = "mp_admission"
AUTH = [(b"authorization", f"Bearer {KEY}".encode())]


class _Hold:
    def __init__(self) -> None:
        self.headers = [(b"x-ratelimit-limit-requests", b"9")]
        self.delivered_calls: list[int] = []
        self.releases: list[tuple[int, Units | None]] = []

    def delivered(self, tokens: int) -> None:
        self.delivered_calls.append(tokens)

    def release(self, status: int, units: Units | None) -> None:
        self.releases.append((status, units))


class _Guard:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.callers: list[Caller] = []
        self.holds: list[_Hold] = []

    async def admit(self, caller: Caller) -> _Hold:
        self.callers.append(caller)
        if self.refuse:
            raise TooManyRequests("slow down", headers=((b"retry-after", b"7"),))
        hold = _Hold()
        self.holds.append(hold)
        return hold


class _Replica:
    """Answers each request with ``reply``: JSON, or server-sent events, one HTTP chunk each."""

    def __init__(self) -> None:
        self.status = 200
        self.events: list[bytes] | None = None
        self.delay_s = 0.0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                await read_request(reader)
                self.requests += 1
                await asyncio.sleep(self.delay_s)
                if self.events is None:
                    body = b'{"outputs":[]}'
                    writer.write(
                        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                        b"x-modelport-units: rows=3\r\ncontent-length: %d\r\n\r\n%s"
                        % (self.status, len(body), body)
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    for event in self.events:
                        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def setup() -> AsyncIterator[tuple[GatewayApp, _Replica, _Guard]]:
    replica = _Replica()
    server = await asyncio.start_server(replica.handle, "127.0.0.1", 0)
    upstream = Upstream("127.0.0.1", server.sockets[0].getsockname()[1])
    pool = UpstreamPool()
    app = GatewayApp(pool, max_body_bytes=4096)
    principal = KeyPrincipal("key_1", "default", "n", team="core", customers=frozenset({"*"}))
    app.publish_keys({hashlib.sha256(KEY.encode()).hexdigest(): principal})
    tabular = Route("tab", "m", 3, b"{}", b"t", (upstream,), task="tabular")
    chat = Route("chat", "llm", 2, b"{}", b"t", (upstream,), task="chat")
    app.publish_routes(RoutingSnapshot.of([Traffic.single(tabular), Traffic.single(chat)]))
    guard = _Guard()
    app.admission = Admission([guard])
    yield app, replica, guard
    await pool.close()
    replica.close()
    server.close()


async def _call(
    app: GatewayApp, path: str, body: bytes, headers: list[tuple[bytes, bytes]] = AUTH
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body_out = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], dict(sent[0]["headers"]), body_out


async def test_an_admitted_call_tells_the_guard_who_calls_and_releases_once(setup) -> None:
    app, _, guard = setup
    body = b'{"inputs":[]}' + b" " * 87  # 100 bytes: 25 tokens estimated
    status, headers, _ = await _call(app, "/v2/models/tab/infer", body)
    assert status == 200 and headers[b"x-ratelimit-limit-requests"] == b"9"
    (caller,) = guard.callers
    assert (caller.key_id, caller.project, caller.team, caller.endpoint) == (
        "key_1",
        "default",
        "core",
        "tab",
    )
    assert (caller.model, caller.version, caller.task) == ("m", 3, "tabular")
    assert (caller.input_estimate, caller.max_output, caller.customer) == (25, None, "")
    ((released, units),) = guard.holds[0].releases
    assert released == 200 and units is not None and units.rows == 3


async def test_openai_calls_carry_max_tokens_and_the_customer(setup) -> None:
    app, replica, guard = setup
    replica.events = [b'id: 1\ndata: {"choices":[]}\n\n', UNITS_SSE_PREFIX + b"output_tokens=1\n\n"]
    payload = {"model": "chat", "messages": [], "max_completion_tokens": 40, "stream": True}
    headers = [*AUTH, (b"x-modelport-customer", b"acme")]
    await _call(app, "/v1/chat/completions", orjson.dumps(payload), headers)
    assert (guard.callers[0].max_output, guard.callers[0].customer) == (40, "acme")
    payload = {"model": "chat", "messages": [], "max_tokens": 7, "stream": True}
    await _call(app, "/v1/chat/completions", orjson.dumps(payload))
    assert guard.callers[1].max_output == 7


async def test_a_refusal_is_429_with_its_headers_and_nothing_is_forwarded(setup) -> None:
    app, replica, guard = setup
    guard.refuse = True
    status, headers, body = await _call(app, "/v2/models/tab/infer", b"{}")
    assert status == 429 and headers[b"retry-after"] == b"7"
    assert b"slow down" in body and replica.requests == 0


@pytest.mark.parametrize(("upstream", "expected"), [(500, 500), (422, 422)])
async def test_upstream_errors_release_the_hold_once(setup, upstream: int, expected: int) -> None:
    app, replica, guard = setup
    replica.status = upstream
    status, _, _ = await _call(app, "/v2/models/tab/infer", b"{}")
    assert status == expected
    assert [r[0] for r in guard.holds[0].releases] == [expected]


async def test_a_timeout_releases_the_hold_once(setup) -> None:
    app, replica, guard = setup
    replica.delay_s = 0.5
    headers = [*AUTH, (b"x-modelport-timeout", b"0.1")]
    status, _, _ = await _call(app, "/v2/models/tab/infer", b"{}", headers)
    assert status == 504
    assert [r[0] for r in guard.holds[0].releases] == [504]


async def test_a_client_that_leaves_releases_the_hold(setup) -> None:
    app, replica, guard = setup
    replica.delay_s = 5.0
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": AUTH}
    messages = [
        {
            "type": "http.request",
            "body": orjson.dumps({"model": "chat", "messages": []}),
            "more_body": False,
        },
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        if len(messages) == 1:
            await asyncio.sleep(0.1)
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)
    assert [r[0] for r in guard.holds[0].releases] == [499]


async def test_a_cancelled_call_still_releases_its_hold(setup) -> None:
    app, replica, guard = setup
    replica.delay_s = 5.0
    call = asyncio.create_task(_call(app, "/v2/models/tab/infer", b"{}"))
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [r[0] for r in guard.holds[0].releases] == [499]


async def test_a_stream_reports_delivered_tokens_per_chunk_then_releases(setup) -> None:
    app, replica, guard = setup
    replica.events = [
        b'id: 1\ndata: {"choices":[{"delta":{"content":"a"}}]}\n\n',
        b'id: 2\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\n',
        b'id: 3\ndata: {"choices":[{"delta":{"content":"c"}}]}\n\n',
        UNITS_SSE_PREFIX + b"input_tokens=4,output_tokens=3\n\n",
        b"data: [DONE]\n\n",
    ]
    payload = {"model": "chat", "messages": [], "stream": True}
    status, headers, body = await _call(app, "/v1/chat/completions", orjson.dumps(payload))
    assert status == 200 and headers[b"x-ratelimit-limit-requests"] == b"9"
    assert b"[DONE]" in body
    hold = guard.holds[0]
    assert hold.delivered_calls == [1, 2, 3]
    ((released, units),) = hold.releases
    assert released == 200 and units is not None
    assert (units.input_tokens, units.output_tokens) == (4, 3)


async def test_admission_off_costs_no_guard(setup) -> None:
    app, _, guard = setup
    app.admission = None
    status, headers, _ = await _call(app, "/v2/models/tab/infer", b"{}")
    assert status == 200 and b"x-ratelimit-limit-requests" not in headers
    assert guard.callers == []
