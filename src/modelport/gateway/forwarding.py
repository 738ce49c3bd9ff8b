"""Sending one call to an endpoint: which replica, when a retry is safe, the fallback chain.

A call is sent again (to another replica of the revision, or down the endpoint's fallback
chain) only when doing so cannot repeat work: the first try provably never reached its
upstream (no connection), the upstream answered 503 (it did not take the call), or the task
is idempotent (tabular, vision, embedding) and the upstream died without answering. A 5xx
*answer* is final for that upstream and moves down the fallback chain; a broken or silent
exchange of a generation does not, since the generation may have run (and been billed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelport.core.asgi import Scope
from modelport.core.errors import BadGateway, ModelportError, Unavailable
from modelport.core.replica import WORKER_TOKEN_HEADER
from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Traffic, Upstream
from modelport.core.usage import UNITS_HEADER, Units
from modelport.gateway.balancing import LeastOutstanding
from modelport.gateway.hops import HOPS_HEADER, Hops
from modelport.gateway.openai_usage import asked_for_usage, asking_for_usage, units_from_body
from modelport.gateway.upstream import (
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamStream,
)
from modelport.gateway.waking import Waker
from modelport.governance.admission import Hold
from modelport.observability import logs, tracing
from modelport.observability.shadow import ShadowReports
from modelport.observability.windows import RevisionWindows

__all__ = ["Call", "Forwarder", "Outcome", "request_for"]

_FORWARDED_REQUEST = (b"content-type", b"inference-header-content-length")
_NO_REPLICA = UpstreamError("no ready replica", maybe_processed=False)

log = logging.getLogger("modelport.gateway")


class Call:
    """One request's identity and bookkeeping, from auth to the usage record."""

    __slots__ = (
        "_born",
        "api_path",
        "asked_s",
        "body",
        "customer",
        "deadline",
        "endpoint",
        "hold",
        "hops",
        "judged",
        "payload",
        "principal",
        "reply_headers",
        "request_id",
        "route",
        "scope",
        "started",
        "timeout_s",
        "upstream_ms",
        "upstream_since",
    )

    def __init__(
        self,
        scope: Scope,
        request_id: bytes,
        principal: KeyPrincipal,
        started: float,
        timeout_s: float,
        asked_s: float | None = None,
    ) -> None:
        self.scope = scope
        self.request_id = request_id
        logs.bind_request(request_id)  # every line logged for this request carries its id
        self.principal = principal
        self.started = started
        self.asked_s = asked_s  # what the client asked for with X-Modelport-Timeout
        self.timeout_s = timeout_s if asked_s is None else min(asked_s, timeout_s)
        self._born = asyncio.get_running_loop().time()
        self.deadline = self._born + self.timeout_s
        self.customer: str | None = None
        self.reply_headers = [(b"x-request-id", request_id)]
        # Requests that chose their revision (pinned, or by a segment rule) are not a sample
        # of its traffic: they never feed the SLO window a rollout is judged on.
        self.judged = True
        self.hops: Hops | None = None
        self.endpoint = ""  # the endpoint the client called, for the hop header
        self.route: Route | None = None  # the revision being tried now
        # What admission holds for the call (None: admission off), released when metered.
        self.hold: Hold | None = None
        # What to send: the OpenAI path ("" for V2 inference), the body as the client sent
        # it, and its parsed JSON when an external server needs its model name changed.
        self.api_path = ""
        self.body = b""
        self.payload: dict[str, Any] | None = None
        # Time upstreams spent on this call, every attempt (the replicas' busy time); a
        # stream adds its open one's time from ``upstream_since`` when it is metered.
        self.upstream_ms = 0.0
        self.upstream_since: float | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def upstream_total_ms(self) -> float:
        """Upstream time so far, a stream still open included."""
        since = self.upstream_since
        if since is None:
            return self.upstream_ms
        return self.upstream_ms + (time.perf_counter() - since) * 1000

    def use_timeout(self, endpoint_timeout_s: float) -> None:
        """The endpoint's own timeout replaces the server's; a client may still ask for less."""
        asked = self.asked_s
        self.timeout_s = endpoint_timeout_s if asked is None else min(asked, endpoint_timeout_s)
        self.deadline = self._born + self.timeout_s


@dataclass(slots=True)
class Outcome:
    """An upstream's answer, the revision that gave it, and the units it reported."""

    response: UpstreamResponse
    route: Route
    units: Units


def request_for(route: Route, call: Call) -> tuple[str, bytes]:
    """The path and body to send one revision: V2 goes to its infer path; OpenAI calls keep
    their path, except on an external server, which gets its own path and model name. A
    stream to a server that reports OpenAI ``usage`` asks it for the usage event."""
    api_path, body, payload = call.api_path, call.body, call.payload
    if not api_path:
        return route.infer_path, body
    remote = route.remote
    asks = route.openai_usage and payload is not None and payload.get("stream") is True
    if asks and payload is not None:
        payload = asking_for_usage(payload)
    if remote is None:
        return api_path, orjson.dumps(payload) if asks else body
    if payload is not None:
        body = orjson.dumps({**payload, "model": remote.model})
    return remote.path_prefix + api_path[3:], body


def units_of(route: Route, response: UpstreamResponse) -> Units:
    """What an answer says the call consumed: Modelport workers' header, or OpenAI's
    ``usage`` in the body of a server that reports it that way."""
    if route.openai_usage and response.status == 200:
        return units_from_body(response.body)
    return Units.decode(response.header(UNITS_HEADER))


def _retry_is_safe(
    route: Route, response: UpstreamResponse | None, failure: UpstreamError | None
) -> bool:
    """May this call go to another replica of the same revision?"""
    if response is not None:
        return response.status == 503  # "not now": the replica did not take the call
    assert failure is not None
    return not failure.maybe_processed or route.idempotent


def _fallback_is_safe(
    route: Route, response: UpstreamResponse | None, failure: UpstreamError | None
) -> bool:
    """May this call go down the fallback chain?"""
    if response is not None:
        # An answer is final; only a 504 from an upstream's own proxy may hide work in flight.
        return response.status >= 500 and (response.status != 504 or route.idempotent)
    return _retry_is_safe(route, response, failure)


class Forwarder:
    """Sends calls to revisions, with retries and fallbacks that never duplicate work."""

    def __init__(
        self,
        upstream: UpstreamPool,
        windows: RevisionWindows,
        shadows: ShadowReports,
        snapshot: Callable[[], RoutingSnapshot],
        hop_id: str,
    ) -> None:
        self._upstream = upstream
        self._windows = windows
        self._shadows = shadows
        self._snapshot = snapshot
        self._hop_id = hop_id
        self.balancer = LeastOutstanding()
        self._sent = self.balancer.sent_counts
        # Holds calls to a revision scaled to zero until it has a replica (None: 503 at once).
        self.waker: Waker | None = None

    def _headers(self, route: Route, call: Call) -> list[tuple[bytes, bytes]]:
        if route.remote is not None:  # an external server: its own credential, if any
            hops = call.hops if call.hops is not None else Hops()
            headers = [
                (b"x-request-id", call.request_id),
                (HOPS_HEADER, hops.through(self._hop_id, call.endpoint)),
            ]
            if route.remote.authorization:
                headers.append((b"authorization", route.remote.authorization))
        else:
            headers = [
                (WORKER_TOKEN_HEADER, route.token),
                # Replicas that are servers of their own (vLLM) take the secret as a bearer.
                (b"authorization", route.bearer),
                (b"x-request-id", call.request_id),
            ]
        for key, value in call.scope["headers"]:
            if key in _FORWARDED_REQUEST:
                headers.append((key, value))
        return headers

    async def _try(
        self,
        upstream: Upstream,
        route: Route,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> tuple[UpstreamResponse | None, UpstreamError | None]:
        in_flight = self.balancer.in_flight_counts
        in_flight[upstream] += 1
        self._sent[upstream] += 1
        if tracing.ENABLED:
            headers = tracing.start_attempt(route, upstream, path, headers)
        try:
            response = await self._upstream.request(
                upstream, "POST", path, headers, body, idempotent=route.idempotent
            )
            if tracing.ENABLED:
                tracing.end_attempt(response.status)
            return response, None
        except UpstreamError as exc:
            if tracing.ENABLED:
                tracing.end_attempt(None, exc)
            return None, exc
        finally:
            in_flight[upstream] -= 1

    async def _attempt(
        self, route: Route, call: Call
    ) -> tuple[UpstreamResponse | None, UpstreamError | None]:
        """One revision's answer, tried on a second replica only when that is safe."""
        first = self.balancer.choose(route)
        if first is None:
            return None, _NO_REPLICA
        path, body = request_for(route, call)
        headers = self._headers(route, call)
        begun = time.perf_counter()
        response, failure = await self._try(first, route, path, headers, body)
        if _retry_is_safe(route, response, failure):
            second = self.balancer.choose(route, skip=first)
            if second is not None and second != first:
                response, failure = await self._try(second, route, path, headers, body)
        call.upstream_ms += (time.perf_counter() - begun) * 1000
        return response, failure

    def _chain(self, traffic: Traffic, route: Route) -> list[Route]:
        chain = []
        for step in traffic.fallback.get(route.label) or ():
            if isinstance(step, Route):
                chain.append(step)
            else:
                other = self._snapshot().routes.get(step)
                if other is not None:
                    chain.append(other.primary)
        return chain

    def _failed(self, route: Route, call: Call, status: int) -> None:
        """The revision that failed is judged on its own numbers, not the fallback's."""
        if call.judged:
            self._windows.record(route.endpoint, route.label, call.elapsed_ms(), status)

    async def answer(self, traffic: Traffic, route: Route, call: Call) -> Outcome:
        """The first usable answer from the revision or its fallbacks; ``Unavailable`` (503)
        when none was reached, ``BadGateway`` (502) when one may have done the work."""
        if not route.replicas and self.waker is not None:  # scaled to zero: wait for one
            route = await self.waker.ready(route)
        call.route = route
        response, failure = await self._attempt(route, call)
        if _fallback_is_safe(route, response, failure):
            for fallback in self._chain(traffic, route):
                self._failed(route, call, response.status if response is not None else 503)
                route = call.route = fallback
                response, failure = await self._attempt(route, call)
                if not _fallback_is_safe(route, response, failure):
                    break
        if response is None:
            assert failure is not None
            raise _no_answer(route, failure)
        if response.status >= 500:
            log.warning(
                "request %s: endpoint '%s' %s answered %d",
                call.request_id.decode(),
                route.endpoint,
                route.label,
                response.status,
            )
        units = units_of(route, response)
        if tracing.ENABLED:
            tracing.record_units(route, units)
        return Outcome(response, route, units)

    async def open(
        self, traffic: Traffic, route: Route, call: Call
    ) -> tuple[UpstreamStream, Route]:
        """A stream's response head, from the revision or, before any byte reached the
        client, from a replica or fallback that can take it."""
        if not route.replicas and self.waker is not None:  # scaled to zero: wait for one
            route = await self.waker.ready(route)
        call.route = route
        candidates = [route, *self._chain(traffic, route)]
        failure: UpstreamError = _NO_REPLICA
        for index, candidate in enumerate(candidates):
            if index:
                self._failed(route, call, 503)
            route = call.route = candidate
            path, sent = request_for(route, call)
            headers = self._headers(route, call)
            tried: Upstream | None = None
            for _ in range(2):  # a second replica only when the first did not take the call
                replica = self.balancer.choose(route, skip=tried)
                if replica is None or replica == tried:
                    break
                tried = replica
                begun = time.perf_counter()
                sending = headers
                if tracing.ENABLED:
                    sending = tracing.start_attempt(route, replica, path, headers)
                try:
                    stream = await self._open(replica, path, sending, sent)
                except UpstreamError as exc:
                    if tracing.ENABLED:
                        tracing.end_attempt(None, exc)
                    call.upstream_ms += (time.perf_counter() - begun) * 1000
                    failure = exc
                    if exc.maybe_processed:
                        raise _no_answer(route, exc) from None
                    continue
                if tracing.ENABLED:
                    tracing.end_attempt(stream.status)
                if stream.status != 503:
                    if route.openai_usage and call.payload is not None:
                        stream.openai_usage = True
                        stream.hide_usage = not asked_for_usage(call.payload)
                    call.upstream_since = begun  # its time counts until it is metered
                    return stream, route
                stream.close()
                call.upstream_ms += (time.perf_counter() - begun) * 1000
                failure = UpstreamError("the replica answered 503", maybe_processed=False)
        raise _no_answer(route, failure)

    async def _open(
        self, replica: Upstream, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamStream:
        in_flight = self.balancer.in_flight_counts
        in_flight[replica] += 1
        self._sent[replica] += 1
        try:
            stream = await self._upstream.open(replica, "POST", path, headers, body)
        except BaseException:
            in_flight[replica] -= 1
            raise
        stream.on_close(lambda: in_flight.__setitem__(replica, in_flight[replica] - 1))
        return stream

    async def mirror(
        self, shadow: Route, call: Call, primary: tuple[int, float, bytes, Units]
    ) -> None:
        """Send a copy to the shadow revision; compare, record, and discard its answer."""
        if tracing.ENABLED:
            tracing.detach()  # the copy is not part of the request's trace, which has ended
        started = time.perf_counter()
        try:
            async with asyncio.timeout(call.timeout_s):
                response, _ = await self._attempt(shadow, call)
        except TimeoutError:
            response = None
        latency_ms = (time.perf_counter() - started) * 1000
        status = response.status if response is not None else 503
        if not 400 <= status < 500:
            self._windows.record(shadow.endpoint, shadow.label, latency_ms, status)
        units = units_of(shadow, response) if response is not None else Units()
        self._shadows.get(shadow.endpoint, shadow.label).add(
            primary_status=primary[0],
            primary_latency_ms=primary[1],
            primary_body=primary[2],
            primary_output_tokens=primary[3].output_tokens,
            shadow_status=status,
            shadow_latency_ms=latency_ms,
            shadow_body=response.body if response is not None else b"",
            shadow_output_tokens=units.output_tokens,
        )


def _no_answer(route: Route, failure: UpstreamError) -> ModelportError:
    if failure.maybe_processed:
        return BadGateway(
            f"endpoint '{route.endpoint}' broke off its answer ({failure}); not retried, since "
            "the work may have been done"
        )
    return Unavailable(f"endpoint '{route.endpoint}' is unavailable: {failure}")
