"""The gateway's raw ASGI app: Open Inference Protocol (V2) in front of the replicas.

Hot path: auth (hash lookup in memory) -> route (immutable snapshot) -> forward (pooled
keep-alive connection) -> respond. No database, no framework, no per-request lookups beyond
two dict reads.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping
from types import MappingProxyType

import orjson

from modelport.core.asgi import Receive, Scope, Send, header, read_body, send_bytes, send_json
from modelport.core.errors import ModelportError, NotFound, Unauthorized, Unavailable
from modelport.core.replica import WORKER_TOKEN_HEADER
from modelport.core.routing import KeyPrincipal, Route, RoutingSnapshot, Upstream
from modelport.gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse

__all__ = ["GatewayApp"]

log = logging.getLogger("modelport.gateway")

_JSON = (b"content-type", b"application/json")
_FORWARDED_REQUEST = (b"content-type", b"inference-header-content-length")
_FORWARDED_RESPONSE = frozenset(
    {b"content-type", b"inference-header-content-length", b"x-modelport-rows"}
)
_SERVER_METADATA = orjson.dumps(
    {"name": "modelport", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
)


class GatewayApp:
    """Serves ``/v2`` from the last published routing snapshot and key table."""

    def __init__(self, upstream: UpstreamPool, max_body_bytes: int) -> None:
        self.snapshot = RoutingSnapshot()
        self.keys: Mapping[str, KeyPrincipal] = MappingProxyType({})
        self._upstream = upstream
        self._max_body = max_body_bytes

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
        request_id = header(scope, b"x-request-id") or uuid.uuid4().hex.encode()
        reply_headers = [(b"x-request-id", request_id)]
        try:
            self._authenticate(scope)
            if path.startswith("/v2/models/"):
                await self._model_route(scope, receive, send, path[11:], reply_headers)
            elif path == "/v2":
                await send_bytes(send, 200, _SERVER_METADATA, [_JSON, *reply_headers])
            else:
                raise NotFound(f"no route {scope['method']} {path}")
        except ModelportError as exc:
            await send_json(send, exc.status, {"error": exc.message}, reply_headers)

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

    async def _model_route(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rest: str,
        reply_headers: list[tuple[bytes, bytes]],
    ) -> None:
        name, _, action = rest.partition("/")
        route = self.snapshot.routes.get(name)
        if route is None:
            raise NotFound(f"endpoint '{name}' does not exist")
        if action.startswith("versions/"):
            version, _, action = action[9:].partition("/")
            if version != str(route.version):
                raise NotFound(f"endpoint '{name}' serves version {route.version}, not {version!r}")
        if action == "infer" and scope["method"] == "POST":
            await self._infer(scope, receive, send, route, reply_headers)
        elif action == "ready" and scope["method"] == "GET":
            status = 200 if route.replicas else 503
            await send_json(send, status, {"name": name, "ready": bool(route.replicas)})
        elif action == "" and scope["method"] == "GET":
            await send_bytes(send, 200, route.metadata, [_JSON, *reply_headers])
        else:
            raise NotFound(f"no route {scope['method']} /v2/models/{rest}")

    async def _try(
        self, upstream: Upstream, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[UpstreamResponse | None, UpstreamError | None]:
        try:
            return await self._upstream.request(upstream, "POST", path, headers, body), None
        except UpstreamError as exc:
            return None, exc

    async def _infer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        reply_headers: list[tuple[bytes, bytes]],
    ) -> None:
        declared = header(scope, b"content-length")
        body = await read_body(receive, self._max_body, int(declared) if declared else None)
        forward = [(WORKER_TOKEN_HEADER, route.token), (b"x-request-id", reply_headers[0][1])]
        for key, value in scope["headers"]:
            if key in _FORWARDED_REQUEST:
                forward.append((key, value))
        path = route.infer_path
        upstream = route.pick()
        if upstream is None:
            raise Unavailable(
                f"endpoint '{route.endpoint}' has no ready replica yet: retry shortly"
            )
        response, failure = await self._try(upstream, path, forward, body)
        if response is None or response.status == 503:
            # The replica died or restarted between snapshots: one more try on another.
            retry = route.pick(skip=upstream)
            if retry is not None and retry != upstream:
                response, failure = await self._try(retry, path, forward, body)
        if response is None:
            raise Unavailable(f"endpoint '{route.endpoint}' is unavailable: {failure}")
        headers = [h for h in response.headers if h[0] in _FORWARDED_RESPONSE]
        headers.extend(reply_headers)
        headers.append((b"x-modelport-model", route.model_header))
        await send_bytes(send, response.status, response.body, headers)
