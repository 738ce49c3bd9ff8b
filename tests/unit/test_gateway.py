"""The gateway app and its upstream client, in process, with a real loopback replica."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelport.control.traffic import traffic_of
from modelport.core.intent import parse_intent
from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic, Upstream
from modelport.gateway import GatewayApp, UpstreamError, UpstreamPool
from tests.unit.loopback import read_request

KEY = "mp_testkey"

# The tests pin revisions and name customers: privileges a key holds explicitly.
PRIVILEGES = {"can_pin": True, "can_route_by_header": True, "customers": frozenset({"*"})}


async def _call(
    app: GatewayApp, method: str, path: str, body: bytes = b"", headers=None
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # like a server: nothing more until the client leaves
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


class _Replica:
    """A tiny HTTP/1.1 server that answers like a worker and counts connections."""

    def __init__(
        self, reply: bytes = b'{"ok":true}', chunked: bool = False, status: int = 200
    ) -> None:
        self.reply = reply
        self.status = status
        self.chunked = chunked
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                self.requests.append(await read_request(reader))
                if self.chunked:
                    half = len(self.reply) // 2
                    parts = (self.reply[:half], self.reply[half:])
                    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body)
                else:
                    writer.write(
                        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (self.status, len(self.reply), self.reply)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def replica() -> AsyncIterator[tuple[_Replica, Upstream, asyncio.Server]]:
    fake = _Replica()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield fake, Upstream("127.0.0.1", port), server
    fake.close()
    server.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream_pool = UpstreamPool()
    yield upstream_pool
    await upstream_pool.close()


def _app(pool: UpstreamPool, route: Route | None) -> GatewayApp:
    app = GatewayApp(pool, max_body_bytes=1024)
    app.publish_keys(
        {hashlib.sha256(KEY.encode()).hexdigest(): KeyPrincipal("k1", "default", "n", **PRIVILEGES)}
    )
    if route is not None:
        app.publish_routes(RoutingSnapshot.of([Traffic.single(route)]))
    return app


def _route(*replicas: Upstream) -> Route:
    return Route("ep", "m", 1, orjson.dumps({"name": "ep"}), b"secret", replicas)


AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_forwards_with_the_replica_token_and_request_id(replica, pool) -> None:
    fake, upstream, _ = replica
    app = _app(pool, _route(upstream))
    status, headers, body = await _call(
        app, "POST", "/v2/models/ep/infer", b'{"inputs":[]}', {**AUTH, "x-request-id": "abc"}
    )
    assert (status, body) == (200, b'{"ok":true}')
    assert headers[b"x-request-id"] == b"abc"
    assert headers[b"x-modelport-revision"] == b"r1"
    sent = fake.requests[0]
    assert b"x-modelport-worker-token: secret" in sent
    assert b"x-request-id: abc" in sent
    assert KEY.encode() not in sent  # the client's key never reaches the replica


async def test_connections_are_reused(replica, pool) -> None:
    fake, upstream, _ = replica
    app = _app(pool, _route(upstream))
    for _ in range(5):
        assert (await _call(app, "POST", "/v2/models/ep/infer", b"{}", AUTH))[0] == 200
    assert fake.connections == 1


async def test_auth_routing_and_readiness_errors(pool) -> None:
    app = _app(pool, _route())  # no ready replica
    assert (await _call(app, "GET", "/v2/models/ep"))[0] == 401
    assert (await _call(app, "GET", "/v2/models/ep", headers={"Authorization": "Bearer x"}))[
        0
    ] == 401
    assert (await _call(app, "GET", "/v2/models/zz", headers=AUTH))[0] == 404
    status, _, body = await _call(app, "POST", "/v2/models/ep/infer", b"{}", AUTH)
    assert status == 503 and b"no ready replica" in body
    assert (await _call(app, "GET", "/v2/models/ep/ready", headers=AUTH))[0] == 503
    assert (await _call(app, "GET", "/v2/health/live"))[0] == 200
    big = b"x" * 2048
    assert (await _call(app, "POST", "/v2/models/ep/infer", big, AUTH))[0] == 413


async def test_dead_replica_falls_over_to_a_live_one(replica, pool) -> None:
    _, upstream, _ = replica
    dead = Upstream("127.0.0.1", 1)  # nothing listens on port 1
    app = _app(pool, _route(dead, upstream))
    for _ in range(4):
        assert (await _call(app, "POST", "/v2/models/ep/infer", b"{}", AUTH))[0] == 200


async def test_upstream_reads_chunked_and_retries_stale_connections() -> None:
    fake = _Replica(reply=b'{"chunked":true}', chunked=True)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    upstream = Upstream("127.0.0.1", server.sockets[0].getsockname()[1])
    pool = UpstreamPool()
    response = await pool.request(upstream, "POST", "/x", [], b"")
    assert response.body == b'{"chunked":true}'
    # Restart the server: the pooled connection is now stale and must be replaced silently.
    server.close()
    await server.wait_closed()
    for (_, writer), _since in list(pool._idle[upstream]):
        writer.transport.abort()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", upstream.port)
    assert (await pool.request(upstream, "GET", "/y", [])).status == 200
    await pool.close()
    fake.close()
    server.close()
    with pytest.raises(UpstreamError):
        await pool.request(Upstream("127.0.0.1", 1), "GET", "/", [])


async def _serve(fake: _Replica) -> tuple[asyncio.Server, Upstream]:
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    return server, Upstream("127.0.0.1", server.sockets[0].getsockname()[1])


async def test_fallback_retries_a_failing_revision_on_the_stable_one(pool) -> None:
    broken, good = _Replica(b'{"error":"boom"}', status=500), _Replica(b'{"ok":"r1"}')
    (s1, u1), (s2, u2) = await _serve(good), await _serve(broken)
    routes = {
        "r1": Route("ep", "m", 1, b"{}", b"t1", (u1,), label="r1"),
        "r2": Route("ep", "m", 2, b"{}", b"t2", (u2,), label="r2"),
    }
    intent = parse_intent(
        "endpoint: ep\ntask: tabular\nmodel: m:1\nrouting:\n  fallback: [previous]\n"
    )
    app = _app(pool, None)
    app.publish_routes(
        RoutingSnapshot.of(
            [traffic_of(routes, stable="r1", candidate="r2", weight=100, routing=intent.routing)]
        )
    )
    status, headers, body = await _call(app, "POST", "/v2/models/ep/infer", b"{}", AUTH)
    assert (status, body, headers[b"x-modelport-revision"]) == (200, b'{"ok":"r1"}', b"r1")
    assert len(broken.requests) == 1 and b"x-modelport-worker-token: t1" in good.requests[0]
    # The failure still counts against r2 for its rollout; the answer counts for r1.
    assert app.windows.stats("ep", "r2").errors == 1
    assert app.windows.stats("ep", "r1").requests == 1
    # Another endpoint in the chain: its stable revision answers.
    backup = Route("backup", "m", 1, b"{}", b"tb", (u1,), label="r1")
    chain = parse_intent(
        "endpoint: ep\ntask: tabular\nmodel: m:1\nrouting:\n  fallback: [backup]\n"
    ).routing
    app.publish_routes(
        RoutingSnapshot.of(
            [
                traffic_of(routes, stable="r1", candidate="r2", weight=100, routing=chain),
                Traffic.single(backup),
            ]
        )
    )
    status, headers, _ = await _call(app, "POST", "/v2/models/ep/infer", b"{}", AUTH)
    assert status == 200 and b"POST /v2/models/backup/infer" in good.requests[-1]
    assert b"x-modelport-worker-token: tb" in good.requests[-1]
    # Without a fallback chain the client gets r2's own 500.
    app.publish_routes(
        RoutingSnapshot.of([traffic_of(routes, stable="r1", candidate="r2", weight=100)])
    )
    assert (await _call(app, "POST", "/v2/models/ep/infer", b"{}", AUTH))[0] == 500
    for fake, server in ((good, s1), (broken, s2)):
        fake.close()
        server.close()


async def test_openai_model_pins_a_revision(pool) -> None:
    one, two = _Replica(b'{"from":"r1"}'), _Replica(b'{"from":"r2"}')
    (s1, u1), (s2, u2) = await _serve(one), await _serve(two)
    routes = {
        "r1": Route("chat", "m", 1, b"{}", b"t", (u1,), task="chat", label="r1"),
        "r2": Route("chat", "m", 2, b"{}", b"t", (u2,), task="chat", label="r2"),
    }
    app = _app(pool, None)
    app.publish_routes(RoutingSnapshot.of([traffic_of(routes, stable="r1", candidate="r2")]))
    body = b'{"model": "chat@r2", "messages": []}'
    status, headers, reply = await _call(app, "POST", "/v1/chat/completions", body, AUTH)
    assert (status, reply, headers[b"x-modelport-revision"]) == (200, b'{"from":"r2"}', b"r2")
    status, _, reply = await _call(
        app, "POST", "/v1/chat/completions", b'{"model": "chat@r7", "messages": []}', AUTH
    )
    assert status == 404 and b"revision 'r7' of endpoint 'chat' is not running" in reply
    plain = await _call(app, "POST", "/v1/chat/completions", b'{"model": "chat"}', AUTH)
    assert plain[2] == b'{"from":"r1"}'  # weight 0: the stable revision
    for fake, server in ((one, s1), (two, s2)):
        fake.close()
        server.close()


async def test_a_stream_closed_twice_pools_its_connection_once(replica, pool) -> None:
    _, upstream, _ = replica
    stream = await pool.open(upstream, "POST", "/x", [], b"{}")
    assert [chunk async for chunk in stream.body()] == [b'{"ok":true}']
    stream.close()
    stream.close()  # the end of the stream and the client's disconnect both close it
    assert len(pool._idle[upstream]) == 1
    # A pooled connection closed under us is replaced, not handed out broken.
    pool._idle[upstream][0][0][1].close()
    assert (await pool.request(upstream, "POST", "/y", [], b"{}")).status == 200
