"""Retries, deadlines, disconnects, loops and limits of the gateway, in process, against
loopback servers that misbehave on purpose (the unit under test is the gateway's logic)."""

from __future__ import annotations

import asyncio
import hashlib
import time
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
from modelport.gateway import GatewayApp, UpstreamPool
from modelport.gateway.hops import MAX_HOPS
from modelport.observability.usage import RecentUsage
from tests.unit.loopback import read_request

KEY = "mp_testkey"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = b'{"model": "ep", "messages": [{"role": "user", "content": "hi"}]}'


class _Server:
    """Reads each request whole, then: ``answer``, ``drop`` (close without a word), ``hang``
    (never answer), ``busy`` (503), ``stall`` (start a chunked stream, then go quiet) or
    ``huge`` (a body over the gateway's limit)."""

    def __init__(self, mode: str = "answer") -> None:
        self.mode = mode
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # the gateway closed a connection we were working on
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                self.requests.append(await read_request(reader))
                if self.mode == "drop":
                    writer.close()
                    return
                if self.mode == "sse":
                    events = [b"id: 1\ndata: {}\n\n", b"data: [DONE]\n\n"]
                    chunks = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
                    )
                    await writer.drain()
                    continue
                if self.mode == "slow":
                    await asyncio.sleep(0.5)
                if self.mode in ("hang", "stall"):
                    if self.mode == "stall":
                        writer.write(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                            b"transfer-encoding: chunked\r\n\r\n"
                            b"10\r\nid: 1\ndata: {}\n\n\r\n"
                        )
                    if await reader.read(1) == b"":  # waits until the gateway hangs up
                        self.closed.set()
                    return
                status, body = 200, b'{"ok":true}'
                if self.mode == "busy":
                    status, body = 503, b'{"error":"loading"}'
                elif self.mode == "huge":
                    body = b"x" * 4096
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


@pytest.fixture
async def servers() -> AsyncIterator[Any]:
    started: list[tuple[_Server, asyncio.Server]] = []

    async def serve(mode: str = "answer") -> tuple[_Server, Upstream]:
        fake = _Server(mode)
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        started.append((fake, server))
        return fake, Upstream("127.0.0.1", server.sockets[0].getsockname()[1])

    yield serve
    for fake, server in started:
        fake.close()
        server.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream_pool = UpstreamPool(max_response_bytes=1024)
    yield upstream_pool
    await upstream_pool.close()


def _app(pool: UpstreamPool, *routes: Route, **options: Any) -> GatewayApp:
    app = GatewayApp(pool, max_body_bytes=4096, usage=RecentUsage(), **options)
    app.publish_keys({hashlib.sha256(KEY.encode()).hexdigest(): KeyPrincipal("k1", "p", "n")})
    app.publish_routes(RoutingSnapshot.of([Traffic.single(r) for r in routes]))
    return app


def _route(task: str, *replicas: Upstream, remote: RemoteTarget | None = None) -> Route:
    return Route("ep", "m", 1, b"{}", b"secret", replicas, task=task, remote=remote)


async def _call(
    app: GatewayApp,
    path: str,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    *,
    leave_after: float | None = None,
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in {**AUTH, **(headers or {})}.items()],
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        if leave_after is not None:
            await asyncio.sleep(leave_after)
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if not sent:
        return 0, b""  # nothing was sent: the client had gone
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_generation_is_never_sent_twice_after_it_may_have_run(servers, pool) -> None:
    dropping, first = await servers("drop")
    answering, second = await servers()
    app = _app(pool, _route("chat", first, second))
    statuses = [(await _call(app, "/v1/chat/completions", CHAT))[0] for _ in range(4)]
    # Replicas are picked in turn: calls that met the dropping one fail with 502, unretried.
    assert 502 in statuses and 200 in statuses
    assert len(dropping.requests) + len(answering.requests) == 4


async def test_idempotent_work_is_retried_when_the_replica_died(servers, pool) -> None:
    dropping, first = await servers("drop")
    _, second = await servers()
    app = _app(pool, _route("tabular", first, second))
    assert [(await _call(app, "/v2/models/ep/infer"))[0] for _ in range(4)] == [200] * 4
    assert dropping.requests  # it was tried, and the retry hid its failure


async def test_a_503_or_no_connection_is_retried_for_any_task(servers, pool) -> None:
    busy, first = await servers("busy")
    _, second = await servers()
    for upstreams in ((first, second), (Upstream("127.0.0.1", 1), second)):
        app = _app(pool, _route("chat", *upstreams))
        assert [(await _call(app, "/v1/chat/completions", CHAT))[0] for _ in range(4)] == [200] * 4
    assert busy.requests


async def test_one_deadline_and_a_client_may_ask_for_less(servers, pool) -> None:
    hanging, upstream = await servers("hang")
    app = _app(pool, _route("tabular", upstream), timeout_s=30)
    started = time.perf_counter()
    status, body = await _call(app, "/v2/models/ep/infer", headers={"x-modelport-timeout": "0.3"})
    assert status == 504 and b"within 0.3 s" in body
    assert time.perf_counter() - started < 2
    await asyncio.wait_for(hanging.closed.wait(), 2)  # the replica learns nobody waits
    for bad in ("0", "-1", "soon", "nan", "inf"):
        status, body = await _call(app, "/v2/models/ep/infer", headers={"x-modelport-timeout": bad})
        assert status == 400 and b"X-Modelport-Timeout" in body
    assert app.windows.stats("ep", "r1").errors == 1  # the timeout; the 400s are the client's


async def test_the_endpoint_timeout_replaces_the_servers(servers, pool) -> None:
    _, slow = await servers("slow")  # answers after 0.5 s
    patient = Traffic.single(_route("tabular", slow))
    patient = Traffic(patient.primary, patient.revisions, timeout_s=5.0)
    app = _app(pool, timeout_s=0.2)  # the server's default alone would give up first
    app.publish_routes(RoutingSnapshot.of([patient]))
    assert (await _call(app, "/v2/models/ep/infer"))[0] == 200
    status, body = await _call(app, "/v2/models/ep/infer", headers={"x-modelport-timeout": "0.1"})
    assert status == 504 and b"within 0.1 s" in body  # a client may still ask for less
    strict = Traffic(patient.primary, patient.revisions, timeout_s=0.2)
    app.publish_routes(RoutingSnapshot.of([strict]))
    status, body = await _call(app, "/v2/models/ep/infer", headers={"x-modelport-timeout": "9"})
    assert status == 504 and b"within 0.2 s" in body  # but never for more


async def test_a_client_that_leaves_stops_the_work(servers, pool) -> None:
    hanging, upstream = await servers("hang")
    app = _app(pool, _route("chat", upstream))
    status, _ = await _call(app, "/v1/chat/completions", CHAT, leave_after=0.2)
    assert status == 0  # nothing to answer: the client is gone
    await asyncio.wait_for(hanging.closed.wait(), 2)
    assert [r.status for r in app.usage.recent()] == [499]  # type: ignore[attr-defined]
    assert app.windows.stats("ep", "r1").requests == 0  # not evidence about the revision


async def test_a_stalled_stream_ends_with_an_error_event(servers, pool) -> None:
    stalling, upstream = await servers("stall")
    app = _app(pool, _route("chat", upstream), stream_chunk_timeout_s=0.3)
    body = CHAT[:-1] + b', "stream": true}'
    status, streamed = await _call(app, "/v1/chat/completions", body)
    assert status == 200 and b"id: 1" in streamed and b"stalled mid-stream" in streamed
    await asyncio.wait_for(stalling.closed.wait(), 2)
    assert app.windows.stats("ep", "r1").errors == 1


async def test_a_stream_falls_back_before_its_first_byte(servers, pool) -> None:
    body = CHAT[:-1] + b', "stream": true}'
    busy, loading = await servers("busy")
    streaming, ready = await servers("sse")
    app = _app(pool, _route("chat", loading, ready))  # another replica of the same revision
    for _ in range(2):
        status, streamed = await _call(app, "/v1/chat/completions", body)
        assert status == 200 and streamed.endswith(b"data: [DONE]\n\n")
    routes = {
        "r1": Route("ep", "m", 1, b"{}", b"t", (ready,), task="chat", label="r1"),
        "r2": Route("ep", "m", 2, b"{}", b"t", (loading,), task="chat", label="r2"),
    }
    fallback = {"r2": (routes["r1"],)}
    traffic = Traffic(routes["r2"], routes, fallback=fallback)  # r2 serves, r1 is its fallback
    app.publish_routes(RoutingSnapshot.of([traffic]))
    status, streamed = await _call(app, "/v1/chat/completions", body)
    assert status == 200 and b"id: 1" in streamed
    assert app.windows.stats("ep", "r2").errors == 1  # judged on its own failure
    assert busy.requests and streaming.requests


async def test_client_errors_and_pinned_calls_do_not_feed_the_window(servers, pool) -> None:
    _, upstream = await servers("busy")  # every call a 503: a server fault
    app = _app(pool, _route("tabular", upstream))
    await _call(app, "/v2/models/ep/versions/r1/infer")
    assert app.windows.stats("ep", "r1").requests == 0  # pinned: the caller chose it
    await _call(app, "/v2/models/ep/infer")
    assert app.windows.stats("ep", "r1").errors == 1
    await _call(app, "/v1/chat/completions", b"{not json")  # a 400
    assert app.windows.stats("ep", "r1").requests == 1


async def test_loops_are_refused(servers, pool) -> None:
    fake, upstream = await servers()
    remote = RemoteTarget("v2", "", "ep")
    app = _app(pool, _route("tabular", upstream, remote=remote))
    assert (await _call(app, "/v2/models/ep/infer"))[0] == 200
    hops = [line for line in fake.requests[0].split(b"\r\n") if line.startswith(b"x-modelport")]
    assert hops == [f"x-modelport-hops: {app._hop_id}/ep".encode()]
    # The same call coming back (the external URL is this gateway) is refused.
    status, body = await _call(
        app, "/v2/models/ep/infer", headers={"x-modelport-hops": hops[0][18:].decode()}
    )
    assert status == 508 and b"called itself" in body
    chain = ",".join(f"other{i}/ep" for i in range(MAX_HOPS))
    assert (await _call(app, "/v2/models/ep/infer", headers={"x-modelport-hops": chain}))[0] == 508
    assert len(fake.requests) == 1


async def test_upstream_answers_are_bounded(servers, pool) -> None:
    _, upstream = await servers("huge")
    app = _app(pool, _route("chat", upstream))
    status, body = await _call(app, "/v1/chat/completions", CHAT)
    assert status == 502 and b"exceeds 1024 bytes" in body


async def test_connections_per_upstream_are_bounded(servers) -> None:
    hanging, upstream = await servers("hang")
    pool = UpstreamPool(max_connections=2)
    calls = [asyncio.create_task(pool.request(upstream, "POST", "/x", [], b"{}")) for _ in range(5)]
    await asyncio.sleep(0.3)
    assert len(hanging.requests) == 2  # the other three wait for a slot
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    await pool.close()


async def test_bearer_scheme_is_case_insensitive(servers, pool) -> None:
    _, upstream = await servers()
    app = _app(pool, _route("tabular", upstream))
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"authorization": f"{scheme} {KEY}"}
        assert (await _call(app, "/v2/models/ep/infer", headers=headers))[0] == 200


async def test_ready_waits_for_start_and_every_endpoint(servers, pool) -> None:
    _, upstream = await servers()
    app = _app(pool, _route("tabular"))
    assert app.not_ready() == ["the server is still starting"]
    app.started = True
    assert app.not_ready() == ["endpoint 'ep' has no ready replica"]
    app.publish_routes(RoutingSnapshot.of([Traffic.single(_route("tabular", upstream))]))
    assert app.not_ready() == []
    app.publish_routes(RoutingSnapshot.of([Traffic.single(_route("tabular"))]))
    assert app.not_ready() == []  # a later failure shows in the endpoint's own readiness


def test_routes_never_show_their_secrets() -> None:
    remote = RemoteTarget("openai", "/v1", "m", authorization=b"Bearer sk-upstream")
    text = repr(_route("chat", Upstream("h", 1), remote=remote))
    assert "secret" not in text and "sk-upstream" not in text
    assert orjson.dumps({"repr": text})  # and it is still a useful repr
    assert "endpoint='ep'" in text
