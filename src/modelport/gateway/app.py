"""The gateway's raw ASGI app: OpenAI-compatible ``/v1`` and Open Inference Protocol ``/v2``.

Hot path: auth (hash lookup in memory) -> route (immutable snapshot) -> forward (pooled
keep-alive connection) -> meter (units the replica reported) -> respond. No database, no
framework, no per-request lookups beyond a few dict reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from modelport.core.asgi import Receive, Scope, Send, header, read_body, send_bytes, send_json
from modelport.core.errors import (
    InvalidRequest,
    ModelportError,
    NotFound,
    Unauthorized,
    Unavailable,
)
from modelport.core.replica import WORKER_TOKEN_HEADER
from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic, Upstream
from modelport.core.usage import UNITS_HEADER, UNITS_SSE_PREFIX, Units, UsageRecord
from modelport.gateway import openai
from modelport.gateway.balancing import LeastOutstanding
from modelport.gateway.traffic import choose, pinned
from modelport.gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from modelport.observability.shadow import ShadowReports
from modelport.observability.usage import RecentUsage, UsageSink
from modelport.observability.windows import RevisionWindows

__all__ = ["GatewayApp"]

log = logging.getLogger("modelport.gateway")

_JSON = (b"content-type", b"application/json")
_FORWARDED_REQUEST = (b"content-type", b"inference-header-content-length")
_FORWARDED_RESPONSE = frozenset({b"content-type", b"inference-header-content-length"})
_SERVER_METADATA = orjson.dumps(
    {"name": "modelport", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
)
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


_MAX_ID = 128
_MAX_SHADOWS_IN_FLIGHT = 64  # mirrored calls beyond this are skipped, never queued


def _request_for(
    route: Route, api_path: str, body: bytes, payload: dict[str, Any] | None
) -> tuple[str, bytes]:
    """The path and body to send one revision: V2 goes to its infer path; OpenAI calls keep
    their path, except on an external server, which gets its own path and model name."""
    if not api_path:
        return route.infer_path, body
    remote = route.remote
    if remote is None:
        return api_path, body
    if payload is not None:
        body = orjson.dumps({**payload, "model": remote.model})
    return remote.path_prefix + api_path[3:], body


def _client_id(value: bytes | None) -> bytes | None:
    """A client's request id if it is short printable ASCII; otherwise the gateway makes one.
    Ids are logged, metered and echoed back: an odd one must not break any of that."""
    if value and len(value) <= _MAX_ID and value.isascii() and value.decode().isprintable():
        return value
    return None


class _Call:
    """One request's identity and bookkeeping, from auth to the usage record."""

    __slots__ = ("customer", "principal", "reply_headers", "request_id", "started")

    def __init__(self, request_id: bytes, principal: KeyPrincipal, started: float) -> None:
        self.request_id = request_id
        self.principal = principal
        self.started = started
        self.customer: str | None = None
        self.reply_headers = [(b"x-request-id", request_id)]

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class GatewayApp:
    """Serves ``/v1`` and ``/v2`` from the last published routing snapshot and key table."""

    def __init__(
        self,
        upstream: UpstreamPool,
        max_body_bytes: int,
        usage: UsageSink | None = None,
        windows: RevisionWindows | None = None,
        shadows: ShadowReports | None = None,
    ) -> None:
        self.snapshot = RoutingSnapshot()
        self.keys: Mapping[str, KeyPrincipal] = MappingProxyType({})
        self.usage: UsageSink = usage if usage is not None else RecentUsage()
        self.windows = windows if windows is not None else RevisionWindows()
        self.shadows = shadows if shadows is not None else ShadowReports()
        self._shadows_in_flight: set[asyncio.Task[None]] = set()
        self._upstream = upstream
        self._max_body = max_body_bytes
        self._balancer = LeastOutstanding()

    def publish_routes(self, snapshot: RoutingSnapshot) -> None:
        """Swap in a new routing snapshot (one attribute store: atomic for readers)."""
        self.snapshot = snapshot

    def publish_keys(self, keys: Mapping[str, KeyPrincipal]) -> None:
        """Swap in a new table of key hash -> principal."""
        self.keys = MappingProxyType(dict(keys))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/v2/health/live" or path == "/v2/health/ready":
            await send_bytes(send, 200, b"", [])
            return
        started = time.perf_counter()
        request_id = _client_id(header(scope, b"x-request-id")) or os.urandom(16).hex().encode()
        is_openai = path.startswith("/v1/")
        try:
            call = _Call(request_id, self._authenticate(scope), started)
            if is_openai:
                await self._openai(scope, receive, send, path, call)
            elif path.startswith("/v2/models/"):
                await self._v2_model(scope, receive, send, path[11:], call)
            elif path == "/v2":
                await send_bytes(send, 200, _SERVER_METADATA, [_JSON, *call.reply_headers])
            else:
                raise NotFound(f"no route {scope['method']} {path}")
        except ModelportError as exc:
            body = exc.to_openai() if is_openai else {"error": exc.message}
            await send_json(send, exc.status, body, [(b"x-request-id", request_id)])

    def _authenticate(self, scope: Scope) -> KeyPrincipal:
        authorization = header(scope, b"authorization")
        if not authorization or not authorization.startswith(b"Bearer "):
            raise Unauthorized(
                "missing API key: send 'Authorization: Bearer <key>' (create one with "
                "'modelport keys create')"
            )
        digest = hashlib.sha256(authorization[7:].strip()).hexdigest()
        principal = self.keys.get(digest)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    def _traffic(self, name: str) -> Traffic:
        traffic = self.snapshot.routes.get(name)
        if traffic is None:
            raise NotFound(f"endpoint '{name}' does not exist", param="model")
        return traffic

    # -- Open Inference Protocol (V2) ---------------------------------------------------------

    async def _v2_model(
        self, scope: Scope, receive: Receive, send: Send, rest: str, call: _Call
    ) -> None:
        name, _, action = rest.partition("/")
        traffic = self._traffic(name)
        route: Route | None = None
        if action.startswith("versions/"):
            label, _, action = action[9:].partition("/")
            route = pinned(traffic, label)
        if action == "infer" and scope["method"] == "POST":
            if traffic.primary.protocol != "v2":
                raise InvalidRequest(
                    f"endpoint '{name}' serves task {traffic.primary.task}: call it through /v1"
                )
            body = await self._body(scope, receive)
            customer = header(scope, b"x-modelport-customer")
            if customer:
                call.customer = customer[:_MAX_ID].decode(errors="replace")
            if route is None:
                route = choose(traffic, scope, call.principal, call.customer)
            await self._forward(scope, send, traffic, route, "", body, None, call)
        elif action == "ready" and scope["method"] == "GET":
            ready = bool((route or traffic.primary).replicas)
            await send_json(send, 200 if ready else 503, {"name": name, "ready": ready})
        elif action == "" and scope["method"] == "GET":
            metadata = (route or traffic.primary).metadata
            await send_bytes(send, 200, metadata, [_JSON, *call.reply_headers])
        else:
            raise NotFound(f"no route {scope['method']} /v2/models/{rest}")

    # -- OpenAI-compatible (/v1) --------------------------------------------------------------

    async def _openai(
        self, scope: Scope, receive: Receive, send: Send, path: str, call: _Call
    ) -> None:
        if scope["method"] == "GET" and path == "/v1/models":
            body = openai.models_list(self.snapshot.routes)
            await send_bytes(send, 200, body, [_JSON, *call.reply_headers])
            return
        tasks = openai.OPENAI_TASKS.get(path)
        if tasks is None or scope["method"] != "POST":
            raise NotFound(f"no route {scope['method']} {path}")
        body = await self._body(scope, receive)
        stream = False
        payload: dict[str, Any] | None = None
        if path == "/v1/audio/transcriptions":
            name = openai.model_from_multipart(body, header(scope, b"content-type") or b"")
        else:
            name, payload = openai.model_from_json(body)
            stream = payload.get("stream") is True
            user = payload.get("user")
            call.customer = user if isinstance(user, str) else None
        customer = header(scope, b"x-modelport-customer")
        if customer:
            call.customer = customer[:_MAX_ID].decode(errors="replace")
        name, _, label = name.partition("@")  # "endpoint@r2" pins a revision
        traffic = self._traffic(name)
        if traffic.primary.task not in tasks:
            raise InvalidRequest(
                f"endpoint '{name}' serves task {traffic.primary.task}, which {path} does not take",
                param="model",
            )
        if label:
            route = pinned(traffic, label)
        else:
            route = choose(traffic, scope, call.principal, call.customer)
        if stream:
            path, body = _request_for(route, path, body, payload)
            await self._stream(scope, receive, send, route, path, body, call)
        else:
            await self._forward(scope, send, traffic, route, path, body, payload, call)

    # -- forwarding ---------------------------------------------------------------------------

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        declared = header(scope, b"content-length")
        return await read_body(receive, self._max_body, int(declared) if declared else None)

    def _upstream_headers(
        self, scope: Scope, route: Route, call: _Call
    ) -> list[tuple[bytes, bytes]]:
        if route.remote is not None:  # an external server: its own credential, if any
            headers = [(b"x-request-id", call.request_id)]
            if route.remote.authorization:
                headers.append((b"authorization", route.remote.authorization))
        else:
            headers = [
                (WORKER_TOKEN_HEADER, route.token),
                # Replicas that are servers of their own (vLLM) take the secret as a bearer.
                (b"authorization", route.bearer),
                (b"x-request-id", call.request_id),
            ]
        for key, value in scope["headers"]:
            if key in _FORWARDED_REQUEST:
                headers.append((key, value))
        return headers

    def _replica(self, route: Route) -> Upstream:
        upstream = self._balancer.choose(route)
        if upstream is None:
            raise Unavailable(
                f"endpoint '{route.endpoint}' has no ready replica yet: retry shortly"
            )
        return upstream

    async def _try(
        self, upstream: Upstream, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[UpstreamResponse | None, UpstreamError | None]:
        in_flight = self._balancer.in_flight_counts
        in_flight[upstream] += 1
        try:
            return await self._upstream.request(upstream, "POST", path, headers, body), None
        except UpstreamError as exc:
            return None, exc
        finally:
            in_flight[upstream] -= 1

    async def _attempt(
        self, scope: Scope, route: Route, path: str, body: bytes, call: _Call
    ) -> tuple[UpstreamResponse | None, str]:
        """One revision's answer, retried once on another of its replicas if the first was
        unreachable or restarting; or ``None`` and why."""
        upstream = self._balancer.choose(route)
        if upstream is None:
            return None, "no ready replica"
        forward = self._upstream_headers(scope, route, call)
        response, failure = await self._try(upstream, path, forward, body)
        if response is None or response.status == 503:
            # The replica died or restarted between snapshots: one more try on another.
            retry = self._balancer.choose(route, skip=upstream)
            if retry is not None and retry != upstream:
                response, failure = await self._try(retry, path, forward, body)
        return response, str(failure)

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        traffic: Traffic,
        route: Route,
        api_path: str,
        body: bytes,
        payload: dict[str, Any] | None,
        call: _Call,
    ) -> None:
        path, sent = _request_for(route, api_path, body, payload)
        response, failure = await self._attempt(scope, route, path, sent, call)
        if response is None or response.status >= 500:
            chain = traffic.fallback.get(route.label)
            for step in chain or ():
                fallback = step if isinstance(step, Route) else self._fallback_endpoint(step)
                if fallback is None:
                    continue
                # The revision that failed is judged on its own numbers, not the fallback's.
                failed = response.status if response is not None else 503
                self.windows.record(route.endpoint, route.label, call.elapsed_ms(), failed)
                route = fallback
                path, sent = _request_for(route, api_path, body, payload)
                response, failure = await self._attempt(scope, route, path, sent, call)
                if response is not None and response.status < 500:
                    break
        if response is None:
            self.windows.record(route.endpoint, route.label, call.elapsed_ms(), 503)
            raise Unavailable(f"endpoint '{route.endpoint}' is unavailable: {failure}")
        headers = [h for h in response.headers if h[0] in _FORWARDED_RESPONSE]
        headers.extend(call.reply_headers)
        headers.append((b"x-modelport-revision", route.revision))
        await send_bytes(send, response.status, response.body, headers)
        units = Units.decode(response.header(UNITS_HEADER))
        self._meter(route, call, response.status, units)
        shadow = traffic.shadow
        if (
            shadow is not None
            and route is traffic.primary
            and len(self._shadows_in_flight) < _MAX_SHADOWS_IN_FLIGHT
            and random.random() < traffic.shadow_sample  # noqa: S311 - sampling, not a secret
        ):
            primary = (response.status, call.elapsed_ms(), response.body, units.output_tokens)
            task = asyncio.create_task(
                self._mirror(scope, shadow, api_path, body, payload, call, primary)
            )
            self._shadows_in_flight.add(task)
            task.add_done_callback(self._shadows_in_flight.discard)

    def _fallback_endpoint(self, name: str) -> Route | None:
        traffic = self.snapshot.routes.get(name)
        return traffic.primary if traffic is not None else None

    async def _mirror(
        self,
        scope: Scope,
        shadow: Route,
        api_path: str,
        body: bytes,
        payload: dict[str, Any] | None,
        call: _Call,
        primary: tuple[int, float, bytes, int],
    ) -> None:
        """Send a copy to the shadow revision; compare, record, and discard its answer."""
        started = time.perf_counter()
        path, sent = _request_for(shadow, api_path, body, payload)
        response, _ = await self._attempt(scope, shadow, path, sent, call)
        latency_ms = (time.perf_counter() - started) * 1000
        status = response.status if response is not None else 503
        self.windows.record(shadow.endpoint, shadow.label, latency_ms, status)
        units = Units.decode(response.header(UNITS_HEADER)) if response is not None else Units()
        self.shadows.get(shadow.endpoint, shadow.label).add(
            primary_status=primary[0],
            primary_latency_ms=primary[1],
            primary_body=primary[2],
            primary_output_tokens=primary[3],
            shadow_status=status,
            shadow_latency_ms=latency_ms,
            shadow_body=response.body if response is not None else b"",
            shadow_output_tokens=units.output_tokens,
        )

    async def _stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        path: str,
        body: bytes,
        call: _Call,
    ) -> None:
        forward = self._upstream_headers(scope, route, call)
        replica = self._replica(route)
        with self._balancer.track(replica):
            await self._stream_from(replica, receive, send, route, path, forward, body, call)

    async def _stream_from(
        self,
        replica: Upstream,
        receive: Receive,
        send: Send,
        route: Route,
        path: str,
        forward: list[tuple[bytes, bytes]],
        body: bytes,
        call: _Call,
    ) -> None:
        try:
            upstream = await self._upstream.open(replica, "POST", path, forward, body)
        except UpstreamError as exc:
            raise Unavailable(f"endpoint '{route.endpoint}' is unavailable: {exc}") from exc
        if upstream.status != 200:  # an error before the stream started: answer it whole
            chunks = [chunk async for chunk in upstream.body()]
            upstream.close()
            headers = [h for h in upstream.headers if h[0] in _FORWARDED_RESPONSE]
            headers += [*call.reply_headers, (b"x-modelport-revision", route.revision)]
            await send_bytes(send, upstream.status, b"".join(chunks), headers)
            self._meter(route, call, upstream.status, Units())
            return
        headers = [*_SSE_HEADERS, *call.reply_headers, (b"x-modelport-revision", route.revision)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        units = Units()
        delivered = 0  # token events the client received, counted by their SSE ids
        status = 200

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            upstream.close()  # ends the read below; the replica stops generating

        watcher = asyncio.create_task(watch_disconnect())
        try:
            async for chunk in upstream.body():
                if chunk.startswith(UNITS_SSE_PREFIX):
                    units = Units.decode(chunk[len(UNITS_SSE_PREFIX) :].strip())
                    continue
                if chunk.startswith(b"id: "):
                    delivered = int(chunk[4 : chunk.index(b"\n")])
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 499  # the client went away (or the replica did) mid-stream
            units.output_tokens = delivered
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            upstream.close()
        self._meter(route, call, status, units, streamed=True)

    def _meter(
        self, route: Route, call: _Call, status: int, units: Units, *, streamed: bool = False
    ) -> None:
        latency_ms = call.elapsed_ms()
        self.windows.record(route.endpoint, route.label, latency_ms, status)
        self.usage.record(
            UsageRecord(
                request_id=call.request_id.decode(),
                endpoint=route.endpoint,
                revision=route.revision.decode(),
                key_id=call.principal.key_id,
                project=call.principal.project,
                customer=call.customer,
                status=status,
                latency_ms=latency_ms,
                units=units,
                streamed=streamed,
            )
        )
