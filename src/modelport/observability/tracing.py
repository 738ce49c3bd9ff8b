"""OpenTelemetry traces, gateway -> replica, exported over OTLP/HTTP when configured.

With ``MODELPORT_OTLP_ENDPOINT`` unset nothing of OpenTelemetry is imported and nothing
happens: the ASGI wrappers below are not installed, and each hook on the request path sits
behind ``if tracing.ENABLED``, one module attribute read. Set, each process exports its spans
from a ``BatchSpanProcessor`` (a background thread batches and sends them; the request path
only records them in memory):

- the gateway makes a server span per request (continuing the client's W3C ``traceparent``),
  and a client span per upstream attempt (a retry or a fallback is one more), whose context
  goes to the replica in ``traceparent``;
- a worker continues it with a server span of its own.

Attributes follow the OpenTelemetry GenAI and HTTP semantic conventions
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``http.response.status_code``,
``server.address``) plus ``modelport.endpoint``, ``modelport.revision`` and
``modelport.request_id``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from modelport.core.asgi import Message, Receive, Scope, Send
from modelport.core.usage import UNITS_HEADER, UNITS_SSE_PREFIX, Units

if TYPE_CHECKING:  # only for annotations: the module imports none of it until configured
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from modelport.core.routing import Route, Upstream

__all__ = [
    "ENABLED",
    "ASGIApp",
    "configure_tracing",
    "current_ids",
    "detach",
    "end_attempt",
    "record_units",
    "shutdown_tracing",
    "start_attempt",
    "traced_gateway",
    "traced_replica",
]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENABLED = False  # read on the request path; True only once configure_tracing succeeded

# What the gateway calls each task's operation (GenAI names where one applies).
OPERATIONS = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "asr": "transcription",
}
_PREDICT = "predict"  # tabular, vision and custom models: V2 inference

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_propagator: TraceContextTextMapPropagator | None = None
_PROPAGATED = (b"traceparent", b"tracestate")


class _RequestSpans:
    """The spans of the request this task serves: its server span and the open attempt."""

    __slots__ = ("attempt", "server")

    def __init__(self, server: Span) -> None:
        self.server = server
        self.attempt: Span | None = None

    def end_attempt(self) -> None:
        if self.attempt is not None:
            self.attempt.end()
            self.attempt = None


_CURRENT: ContextVar[_RequestSpans | None] = ContextVar("modelport_spans", default=None)


def _traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL from a collector's base URL (as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is read), or the traces URL itself."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def configure_tracing(
    endpoint: str, service: str, attributes: dict[str, str] | None = None
) -> None:
    """Export this process's spans to the OTLP/HTTP collector at ``endpoint`` (say
    ``http://127.0.0.1:4318``), as ``service``; an empty endpoint leaves tracing off."""
    global ENABLED, _tracer, _provider, _propagator
    if not endpoint or ENABLED:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    resource = Resource.create({"service.name": service, **(attributes or {})})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(_traces_url(endpoint))))
    _provider, _tracer = provider, provider.get_tracer("modelport")
    _propagator = TraceContextTextMapPropagator()
    ENABLED = True


def shutdown_tracing() -> None:
    """Send the spans still batched, and stop exporting."""
    global ENABLED
    if _provider is not None and ENABLED:
        ENABLED = False
        _provider.shutdown()


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the request this context serves, for log lines."""
    spans = _CURRENT.get()
    if spans is None:
        return None
    context = spans.server.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _parent(headers: list[tuple[bytes, bytes]]) -> Any:
    """The context a ``traceparent`` header (and its ``tracestate``) continues, if any."""
    assert _propagator is not None
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _PROPAGATED}
    return _propagator.extract(carrier) if carrier else None


def _route_name(path: str) -> str:
    """The route template (``http.route``): endpoint names stay out of span names."""
    if path.startswith("/v2/models/"):
        action = path[11:].partition("/")[2]
        if action.startswith("versions/"):
            rest = action[9:].partition("/")[2]
            return "/v2/models/{model}/versions/{version}" + (f"/{rest}" if rest else "")
        return "/v2/models/{model}" + (f"/{action}" if action else "")
    return path


def _status(span: Span, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))


def _failure(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)))


def _is_traced(scope: Scope) -> bool:
    return scope["type"] == "http" and not scope["path"].startswith("/v2/health")


def traced_gateway(app: ASGIApp) -> ASGIApp:
    """``app`` (the gateway) with a server span around each inference request."""

    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        if not ENABLED or not _is_traced(scope):
            await app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind

        assert _tracer is not None
        method, path = scope["method"], scope["path"]
        route = _route_name(path)
        span = _tracer.start_span(
            f"{method} {route}",
            context=_parent(scope["headers"]),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "url.path": path},
        )
        spans = _RequestSpans(span)
        token = _CURRENT.set(spans)

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                _status(span, message["status"])
                for key, value in message.get("headers", ()):
                    if key == b"x-request-id":
                        span.set_attribute("modelport.request_id", value.decode("latin-1"))
                    elif key == b"x-modelport-revision":
                        span.set_attribute("modelport.revision", value.decode("latin-1"))
            await send(message)

        try:
            await app(scope, receive, send_traced)
        except BaseException as exc:
            _failure(span, exc)
            raise
        finally:
            spans.end_attempt()
            span.end()
            _CURRENT.reset(token)

    return gateway


def _operation(task: str) -> str:
    return OPERATIONS.get(task, _PREDICT)


def start_attempt(
    route: Route, upstream: Upstream, path: str, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """Open the client span of one upstream attempt of the current request (ending the one
    before), and the headers to send with it: ``headers`` plus ``traceparent``. Outside a
    request (a shadow copy, sent after the answer), nothing is traced."""
    spans = _CURRENT.get()
    if spans is None:
        return headers
    from opentelemetry.trace import SpanKind, set_span_in_context

    assert _tracer is not None and _propagator is not None
    spans.end_attempt()
    operation = _operation(route.task)
    model = route.remote.model if route.remote is not None else route.endpoint
    server = spans.server
    server.set_attribute("gen_ai.operation.name", operation)
    server.set_attribute("gen_ai.request.model", route.endpoint)
    server.set_attribute("modelport.endpoint", route.endpoint)
    server.set_attribute("modelport.revision", route.label)
    attempt = _tracer.start_span(
        f"{operation} {model}",
        context=set_span_in_context(server),
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "modelport.endpoint": route.endpoint,
            "modelport.revision": route.label,
            "server.address": upstream.host,
            "server.port": upstream.port,
            "url.path": path,
        },
    )
    spans.attempt = attempt
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=set_span_in_context(attempt))
    return [*headers, *((k.encode(), v.encode()) for k, v in carrier.items())]


def detach() -> None:
    """Trace nothing more in this task (a shadow copy outlives the request it copies)."""
    _CURRENT.set(None)


def end_attempt(status: int | None, error: BaseException | None = None) -> None:
    """Record how the current attempt ended: its status, or the error that ended it. A
    failed attempt's span ends here; an answered one stays open for its units."""
    spans = _CURRENT.get()
    if spans is None or spans.attempt is None:
        return
    if error is not None:
        _failure(spans.attempt, error)
        spans.end_attempt()
    elif status is not None:
        _status(spans.attempt, status)


def _usage(span: Span, units: Units) -> None:
    if units.input_tokens:
        span.set_attribute("gen_ai.usage.input_tokens", units.input_tokens)
    if units.output_tokens:
        span.set_attribute("gen_ai.usage.output_tokens", units.output_tokens)
    if units.rows:
        span.set_attribute("modelport.usage.rows", units.rows)
    if units.images:
        span.set_attribute("modelport.usage.images", units.images)
    if units.audio_seconds:
        span.set_attribute("modelport.usage.audio_seconds", units.audio_seconds)


def record_units(route: Route, units: Units) -> None:
    """The answer's units and the model that gave it, on the request's spans; ends the
    attempt that answered."""
    spans = _CURRENT.get()
    if spans is None:
        return
    response_model = route.remote.model if route.remote is not None else route.model
    for span in (spans.server, spans.attempt):
        if span is not None:
            _usage(span, units)
            span.set_attribute("gen_ai.response.model", response_model)
    spans.server.set_attribute("modelport.revision", route.label)
    spans.end_attempt()


def traced_replica(app: ASGIApp, *, endpoint: str, revision: str, model: str, task: str) -> ASGIApp:
    """``app`` (a worker) with a server span per request that continues the gateway's."""
    operation = _operation(task)

    async def replica(scope: Scope, receive: Receive, send: Send) -> None:
        if not ENABLED or not _is_traced(scope):
            await app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind

        assert _tracer is not None
        headers = scope["headers"]
        request_id = next((v for k, v in headers if k == b"x-request-id"), b"")
        span = _tracer.start_span(
            f"{operation} {endpoint}",
            context=_parent(headers),
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": endpoint,
                "gen_ai.response.model": model,
                "modelport.endpoint": endpoint,
                "modelport.revision": revision,
                "modelport.request_id": request_id.decode("latin-1"),
                "http.request.method": scope["method"],
                "url.path": scope["path"],
            },
        )
        token = _CURRENT.set(_RequestSpans(span))

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                _status(span, message["status"])
                for key, value in message.get("headers", ()):
                    if key == UNITS_HEADER:
                        _usage(span, Units.decode(value))
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body.startswith(UNITS_SSE_PREFIX):  # a stream's units, in its last comment
                    _usage(span, Units.decode(body[len(UNITS_SSE_PREFIX) :].strip()))
            await send(message)

        try:
            await app(scope, receive, send_traced)
        except BaseException as exc:
            _failure(span, exc)
            raise
        finally:
            span.end()
            _CURRENT.reset(token)

    return replica
