"""The gateway's raw ASGI app: OpenAI-compatible ``/v1`` and Open Inference Protocol ``/v2``.

Hot path: auth (hash lookup in memory) -> route (immutable snapshot) -> admit (rate limits,
concurrency, budgets; only when some are set) -> forward (pooled keep-alive connection) ->
meter (units the replica reported; what admission held is released) -> respond. No
database, no framework, no per-request lookups beyond a few dict reads.

Every request has one deadline (the endpoint's timeout, or less if the client asks with
``X-Modelport-Timeout``) covering queueing, retries and fallbacks. A call is sent again (to
another replica or down the fallback chain) only when the first provably never reached its
upstream, the upstream answered 503 before taking it, or the task is idempotent (tabular,
vision, embedding): a generation never runs twice, an external paid API never bills twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import orjson

from modelport.core.asgi import (
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_bytes,
    send_json,
    until_disconnected,
)
from modelport.core.errors import (
    GatewayTimeout,
    InvalidRequest,
    ModelportError,
    NotFound,
)
from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic
from modelport.core.usage import Units, UsageRecord
from modelport.gateway import access, admitting, openai
from modelport.gateway.balancing import LeastOutstanding
from modelport.gateway.forwarding import Call, Forwarder, Outcome
from modelport.gateway.hops import HOPS_HEADER, Hops
from modelport.gateway.request_headers import MAX_ID, TIMEOUT_HEADER, client_id, client_timeout
from modelport.gateway.streaming import relay_stream
from modelport.gateway.traffic import choose, pinned
from modelport.gateway.upstream import UpstreamPool
from modelport.gateway.waking import Waker
from modelport.governance.admission import Admission
from modelport.governance.auth_failures import AuthFailureThrottle
from modelport.observability.sampling import Sample, Sampler, header_length
from modelport.observability.shadow import ShadowReports
from modelport.observability.usage import RecentUsage, UsageSink
from modelport.observability.windows import RevisionWindows

__all__ = ["GatewayApp"]

log = logging.getLogger("modelport.gateway")

_JSON = (b"content-type", b"application/json")
_FORWARDED_RESPONSE = frozenset({b"content-type", b"inference-header-content-length"})
_SERVER_METADATA = orjson.dumps(
    {"name": "modelport", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
)
_V2_HEADER_LENGTH = b"inference-header-content-length"
_CLOSE_AFTER = frozenset({408, 413})
_CLIENT_GONE = 499
_T = TypeVar("_T")

_MAX_SHADOWS_IN_FLIGHT = 64  # mirrored calls beyond this are skipped, never queued


class GatewayApp:
    """Serves ``/v1`` and ``/v2`` from the last published routing snapshot and key table."""

    def __init__(
        self,
        upstream: UpstreamPool,
        max_body_bytes: int,
        usage: UsageSink | None = None,
        windows: RevisionWindows | None = None,
        shadows: ShadowReports | None = None,
        *,
        timeout_s: float = 60.0,
        stream_chunk_timeout_s: float = 60.0,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.snapshot = RoutingSnapshot()
        self.keys: Mapping[str, KeyPrincipal] = MappingProxyType({})
        self.usage: UsageSink = usage if usage is not None else RecentUsage()
        self.windows = windows if windows is not None else RevisionWindows()
        self.shadows = shadows if shadows is not None else ShadowReports()
        # Drift sampling of V2 calls (None: off); set by the server.
        self.sampler: Sampler | None = None
        # Rate limits, concurrency and budgets (None: off, and costs nothing); set by the server.
        self.admission: Admission | None = None
        # Repeated failed authentications per client address -> 429 (None: off).
        self.auth_failures: AuthFailureThrottle | None = None
        # Called with every data-plane 403 (keyword arguments of AuditLog.denied: actor_name,
        # action, target, request_id, source, reason); set by the server. Must not block.
        self.on_denied: Callable[..., None] | None = None
        # Until the control plane says it has published every endpoint it starts with, the
        # server is not ready; after that, once each of them had a ready replica, it is.
        self.started = False
        self._ready_latched = False
        self._shadows_in_flight: set[asyncio.Task[None]] = set()
        self._max_body = max_body_bytes
        self._timeout_s = timeout_s
        self._chunk_timeout_s = stream_chunk_timeout_s
        self._body_timeout_s = body_timeout_s
        self._hop_id = os.urandom(6).hex()
        self._forwarder = Forwarder(
            upstream, self.windows, self.shadows, lambda: self.snapshot, self._hop_id
        )
        # Requests to a revision scaled to zero wait here for a replica (gateway/waking.py).
        self.waker = Waker(lambda: self.snapshot)
        self._forwarder.waker = self.waker

    @property
    def balancer(self) -> LeastOutstanding:
        """The replicas' in-flight counts, which metrics read at scrape time."""
        return self._forwarder.balancer

    def load(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (endpoint, revision label): requests in flight at its routed replicas (those
        waiting in the gateway for a connection or for a replica to wake included), and the
        calls sent to those replicas so far. Read on the event loop, by the autoscaler."""
        return self.waker.load(self.snapshot, self.balancer)

    def publish_routes(self, snapshot: RoutingSnapshot) -> None:
        """Swap in a new routing snapshot (one attribute store: atomic for readers)."""
        self.snapshot = snapshot

    def publish_keys(self, keys: Mapping[str, KeyPrincipal]) -> None:
        """Swap in a new table of key hash -> principal."""
        self.keys = MappingProxyType(dict(keys))

    def not_ready(self) -> list[str]:
        """Why the server is not ready to take traffic; empty once it is.

        Ready means started, and every endpoint had a ready replica once. A later failure of
        one endpoint shows in its own readiness, not in the server's: a load balancer must
        not take a whole server out of rotation for one endpoint."""
        if self._ready_latched:
            return []
        if not self.started:
            return ["the server is still starting"]
        waiting = [
            f"endpoint '{name}' has no ready replica"
            for name, traffic in self.snapshot.routes.items()
            if not traffic.primary.replicas
        ]
        self._ready_latched = not waiting
        return waiting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/v2/health/live":
            await send_bytes(send, 200, b"", [])
            return
        if path == "/v2/health/ready":
            waiting = self.not_ready()
            await send_json(
                send, 503 if waiting else 200, {"ready": not waiting, "waiting": waiting}
            )
            return
        started = time.perf_counter()
        # One pass over the headers for everything the gateway reads before routing.
        authorization = sent_id = timeout = hops = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"x-request-id":
                sent_id = value
            elif key == TIMEOUT_HEADER:
                timeout = value
            elif key == HOPS_HEADER:
                hops = value
        request_id = client_id(sent_id) or os.urandom(16).hex().encode()
        is_openai = path.startswith("/v1/")
        principal: KeyPrincipal | None = None
        try:
            principal = admitting.authenticate(self.keys, self.auth_failures, authorization, scope)
            asked = client_timeout(timeout) if timeout is not None else None
            call = Call(scope, request_id, principal, started, self._timeout_s, asked)
            if hops is not None:
                call.hops = Hops.parse(hops)
            if is_openai:
                await self._openai(scope, receive, send, path, call)
            elif path.startswith("/v2/models/"):
                await self._v2_model(scope, receive, send, path[11:], call)
            elif path == "/v2":
                await send_bytes(send, 200, _SERVER_METADATA, [_JSON, *call.reply_headers])
            else:
                raise NotFound(f"no route {scope['method']} {path}")
        except ModelportError as exc:
            if exc.status == 403 and self.on_denied is not None and principal is not None:
                admitting.report_denied(self.on_denied, scope, principal, request_id, exc)
            body = exc.to_openai() if is_openai else {"error": exc.message}
            headers = [(b"x-request-id", request_id), *exc.headers]
            if exc.status in _CLOSE_AFTER:
                # The rest of the body may still be on its way: drop the connection instead of
                # reading it (each trickled byte would keep the connection alive).
                headers.append((b"connection", b"close"))
            await send_json(send, exc.status, body, headers)

    def _traffic(self, name: str, call: Call) -> Traffic:
        traffic = self.snapshot.routes.get(name)
        if traffic is None:
            raise NotFound(f"endpoint '{name}' does not exist", param="model")
        access.check_endpoint(call.principal, name, traffic)
        if call.hops is not None:
            call.hops.arrive(self._hop_id, name)
        call.endpoint = name
        if traffic.timeout_s is not None:
            call.use_timeout(traffic.timeout_s)
        return traffic

    # -- Open Inference Protocol (V2) ---------------------------------------------------------

    async def _v2_model(
        self, scope: Scope, receive: Receive, send: Send, rest: str, call: Call
    ) -> None:
        name, _, action = rest.partition("/")
        traffic = self._traffic(name, call)
        route: Route | None = None
        if action.startswith("versions/"):
            access.check_pin(call.principal, name)
            label, _, action = action[9:].partition("/")
            route = pinned(traffic, label)
            call.judged = False
        if action == "infer" and scope["method"] == "POST":
            if traffic.primary.protocol != "v2":
                raise InvalidRequest(
                    f"endpoint '{name}' serves task {traffic.primary.task}: call it through /v1"
                )
            call.body = await self._body(scope, receive)
            admitting.identify_customer(scope, call)
            if route is None:
                route, call.judged = choose(traffic, scope, call.principal, call.customer)
            if self.admission is not None:
                await self._admitted(self.admission, receive, send, traffic, route, call)
            else:
                await self._forward(receive, send, traffic, route, call)
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
        self, scope: Scope, receive: Receive, send: Send, path: str, call: Call
    ) -> None:
        if scope["method"] == "GET" and path == "/v1/models":
            body = openai.models_list(access.visible(call.principal, self.snapshot.routes))
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
        name, _, label = name.partition("@")  # "endpoint@r2" pins a revision
        traffic = self._traffic(name, call)
        if label:
            access.check_pin(call.principal, name)
        admitting.identify_customer(scope, call, payload)
        if traffic.primary.task not in tasks:
            raise InvalidRequest(
                f"endpoint '{name}' serves task {traffic.primary.task}, which {path} does not take",
                param="model",
            )
        if label:
            route = pinned(traffic, label)
            call.judged = False
        else:
            route, call.judged = choose(traffic, scope, call.principal, call.customer)
        call.api_path, call.body, call.payload = path, body, payload
        if self.admission is not None:
            await self._admitted(self.admission, receive, send, traffic, route, call, stream)
        elif stream:
            await self._stream(receive, send, traffic, route, call)
        else:
            await self._forward(receive, send, traffic, route, call)

    # -- forwarding ---------------------------------------------------------------------------

    async def _admitted(
        self,
        admission: Admission,
        receive: Receive,
        send: Send,
        traffic: Traffic,
        route: Route,
        call: Call,
        stream: bool = False,
    ) -> None:
        """Forward the call if admission lets it through (else its 429 propagates).

        The hold is released when the call is metered (``_meter``), on every way out; the
        ``finally`` only catches a way out that meters nothing (the task cancelled), so a
        concurrency slot or a budget reservation can never leak."""
        hold = await admission.admit(admitting.caller(call, route))
        call.hold = hold
        call.reply_headers.extend(hold.headers)
        try:
            if stream:
                await self._stream(receive, send, traffic, route, call)
            else:
                await self._forward(receive, send, traffic, route, call)
        finally:
            if call.hold is not None:
                call.hold = None
                hold.release(_CLIENT_GONE, None)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        declared = header(scope, b"content-length")
        try:
            length = int(declared) if declared else None
        except ValueError:
            raise InvalidRequest("header Content-Length must be an integer") from None
        return await read_body(receive, self._max_body, length, timeout_s=self._body_timeout_s)

    async def _in_time(
        self, work: Awaitable[_T], call: Call, route: Route, watch: Receive | None
    ) -> _T | None:
        """``work``'s result within the call's deadline (else 504), or ``None`` when the
        client left first (watched through ``watch``, if given); failures are metered."""
        try:
            async with asyncio.timeout_at(call.deadline):
                if watch is None:
                    return await work
                result: _T | None = await until_disconnected(watch, work)
        except TimeoutError:
            error: ModelportError = GatewayTimeout(
                f"endpoint '{route.endpoint}' did not answer within {call.timeout_s:g} s (its "
                "timeout, or X-Modelport-Timeout): try again, or allow more time"
            )
            self._failed(call.route or route, call, error)
            raise error from None
        except ModelportError as exc:
            self._failed(call.route or route, call, exc)
            raise
        if result is None:  # the client went away; closing the connection stopped the work
            self._meter(call.route or route, call, 499)
        return result

    async def _forward(
        self, receive: Receive, send: Send, traffic: Traffic, route: Route, call: Call
    ) -> None:
        attempt = self._forwarder.answer(traffic, route, call)
        # Long work (not idempotent) stops when nobody waits for the answer any more.
        watch = None if route.idempotent else receive
        outcome: Outcome | None = await self._in_time(attempt, call, route, watch)
        if outcome is None:
            return
        response, route = outcome.response, outcome.route
        headers = [h for h in response.headers if h[0] in _FORWARDED_RESPONSE]
        headers.extend(call.reply_headers)
        headers.append((b"x-modelport-revision", route.revision))
        # Metered before the answer leaves: once the client has it, so has the journal.
        self._meter(route, call, response.status, outcome.units)
        await send_bytes(send, response.status, response.body, headers)
        sampler = self.sampler
        if (
            sampler is not None
            and random.random() < sampler.rate  # noqa: S311 - sampling, not a secret
            and response.status == 200
            and route.protocol == "v2"
        ):
            # References to bodies already in memory; decoded later, in the scorer's thread.
            sampler.offer(
                Sample(
                    route.endpoint,
                    route.label,
                    call.body,
                    header(call.scope, _V2_HEADER_LENGTH),
                    response.body,
                    header_length(response.headers),
                )
            )
        shadow = traffic.shadow
        if (
            shadow is not None
            and route is traffic.primary
            and len(self._shadows_in_flight) < _MAX_SHADOWS_IN_FLIGHT
            and random.random() < traffic.shadow_sample  # noqa: S311 - sampling, not a secret
        ):
            primary = (response.status, call.elapsed_ms(), response.body, outcome.units)
            task = asyncio.create_task(self._forwarder.mirror(shadow, call, primary))
            self._shadows_in_flight.add(task)
            task.add_done_callback(self._shadows_in_flight.discard)

    async def _stream(
        self, receive: Receive, send: Send, traffic: Traffic, route: Route, call: Call
    ) -> None:
        opening = self._forwarder.open(traffic, route, call)
        # The deadline covers everything up to the first byte; after that the stream is
        # bounded by the time between its chunks.
        opened = await self._in_time(opening, call, route, receive)
        if opened is None:
            return
        stream, route = opened

        def meter(status: int, units: Units, first_token_at: float | None) -> None:
            ttft_ms = None if first_token_at is None else (first_token_at - call.started) * 1000
            self._meter(route, call, status, units, streamed=True, ttft_ms=ttft_ms)

        hold = call.hold
        await relay_stream(
            stream,
            receive,
            send,
            route,
            call.reply_headers,
            self._chunk_timeout_s,
            meter,
            None if hold is None else hold.delivered,
        )

    def _failed(self, route: Route, call: Call, error: ModelportError) -> None:
        """Meter a call that got no upstream answer, and tell the operator why."""
        self._meter(route, call, error.status)
        log.warning(
            "request %s to %s %s failed: %s",
            call.request_id.decode(),
            route.endpoint,
            route.label,
            error.message,
        )

    def _meter(
        self,
        route: Route,
        call: Call,
        status: int,
        units: Units | None = None,
        *,
        streamed: bool = False,
        ttft_ms: float | None = None,
    ) -> None:
        """Record one answered call's usage event (in the journal, before it is sent), and
        give back what admission held for it."""
        latency_ms = call.elapsed_ms()
        hold = call.hold
        if hold is not None:
            call.hold = None  # released exactly once, whichever way out meters first
            # The units the event is journaled with (a budget settles at exactly its cost);
            # None stays for calls that meter nothing (refused, cancelled).
            hold.release(status, units if units is not None else Units())
        if call.judged and not 400 <= status < 500:
            # Only server faults (and successes) are evidence about a revision; a client's
            # mistake, or a client that hung up, says nothing about it.
            self.windows.record(route.endpoint, route.label, latency_ms, status)
        self.usage.record(
            UsageRecord(
                request_id=call.request_id.decode(),
                endpoint=route.endpoint,
                revision=route.revision.decode(),
                key_id=call.principal.key_id,
                project=call.principal.project,
                # The OpenAI ``user`` field is not bounded like the header: cut it the same.
                customer=call.customer[:MAX_ID] if call.customer else "",
                status=status,
                latency_ms=latency_ms,
                units=units if units is not None else Units(),
                streamed=streamed,
                model=route.model,
                model_version=route.version,
                task=route.task,
                team=call.principal.team,
                ttft_ms=ttft_ms,
                upstream_ms=call.upstream_total_ms(),
                judged=call.judged,
            )
        )
