"""Prometheus metrics: what the gateway answered, fed from the usage journal, and the live
state (load, replicas, rollouts, error budgets) read when Prometheus scrapes.

Nothing here runs per request. The journal hands ``ModelportMetrics.consume`` the records
written since its last call, a few times a second on the event loop; each record costs a
handful of dictionary reads and observations on children cached per label set. Live state
is read by a collector at scrape time, from providers the server registers with
``ModelportMetrics.watch``: plain callables, so that this module needs nothing from the
control plane or the gateway.

The model-server metrics follow the OpenTelemetry GenAI semantic conventions in their
Prometheus spelling (``gen_ai.server.request.duration`` in seconds becomes
``gen_ai_server_request_duration_seconds``, the attribute ``gen_ai.request.model`` the label
``gen_ai_request_model``) with the conventions' bucket boundaries; the rest are
``modelport_*``. Labels are the endpoint, revision, task and status only: never a key or a
customer, whose number has no bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from modelport.core.asgi import (
    Receive,
    Scope,
    Send,
    bearer_credential,
    header,
    send_bytes,
    send_json,
)
from modelport.core.usage import UsageRecord
from modelport.observability.live_metrics import (
    LABELS,
    LiveState,
    Load,
    ReplicaCount,
    RolloutProgress,
    read,
)

__all__ = [
    "DURATION_BUCKETS",
    "OVERHEAD_BUCKETS",
    "TOKEN_BUCKETS",
    "TPOT_BUCKETS",
    "TTFT_BUCKETS",
    "MetricsRoute",
    "ModelportMetrics",
    "operation_name",
]

# Bucket boundaries the OpenTelemetry GenAI conventions give for each instrument.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
# Modelport's own time per request is a fraction of a millisecond when all is well: the
# buckets start at 50 us so that the claim "adds under 0.3 ms" can be read off them.
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 1.0)  # fmt: skip

PROVIDER = "modelport"  # gen_ai.provider.name: the server that answers, as it names itself
# gen_ai.operation.name for the tasks the conventions name; other tasks keep their own name.
_OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "revision")
_LABELS = LABELS


def operation_name(task: str) -> str:
    """The ``gen_ai.operation.name`` of a task: ``chat``, ``text_completion``, ``embeddings``,
    or the task's own name (``tabular``, ``vision``, ``asr``, ``custom``)."""
    return _OPERATIONS.get(task, task)


# -- per-record series ----------------------------------------------------------------------


class _Series:
    """The children one label set updates, created once and then reused."""

    __slots__ = ("duration", "genai", "labels", "metrics", "optional", "overhead", "requests")

    def __init__(self, metrics: ModelportMetrics, key: tuple[str, str, str, int]) -> None:
        endpoint, revision, task, status = key
        self.metrics = metrics
        self.genai = (operation_name(task), PROVIDER, endpoint, revision)
        self.labels = (endpoint, revision, task)
        self.requests = metrics.requests.labels(endpoint, revision, task, str(status))
        error = str(status) if status >= 400 else ""
        self.duration = metrics.duration.labels(*self.genai, error)
        self.overhead = metrics.overhead.labels(endpoint, revision, task)
        self.optional: dict[str, Any] = {}

    def remove(self, status: int) -> None:
        """Take this label set's series out of every metric (its revision was retired)."""
        metrics = self.metrics
        endpoint, revision, task = self.labels
        metrics.requests.remove(endpoint, revision, task, str(status))
        metrics.duration.remove(*self.genai, str(status) if status >= 400 else "")
        metrics.overhead.remove(*self.labels)
        for name in self.optional:
            if name in ("input", "output"):
                metrics.tokens.remove(*self.genai, name)
            elif name in ("ttft", "tpot"):
                (metrics.ttft if name == "ttft" else metrics.tpot).remove(*self.genai)
            else:
                {"audio": metrics.audio, "images": metrics.images, "rows": metrics.rows}[
                    name
                ].remove(*self.labels)

    def child(self, name: str) -> Any:
        """A child made on first use, so that a tabular endpoint shows no token series."""
        child = self.optional.get(name)
        if child is None:
            child = self.optional[name] = self.metrics.optional_child(name, self)
        return child


class ModelportMetrics:
    """Every metric ``/metrics`` shows, in a registry of its own (not the process-global
    one, which other libraries in the process may fill)."""

    def __init__(self) -> None:
        # A counter's or histogram's "_created" series (its start time) doubles the output
        # and Prometheus does not read it from the text format. The switch is process-wide,
        # and this server is the process's only user of the library.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "modelport_requests",
            "Requests answered, by endpoint, revision, task and HTTP status (499: the client "
            "left; 504: the deadline passed).",
            [*_LABELS, "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request's arrival to its last byte (gen_ai.server.request.duration), "
            "every task; error_type is the HTTP status of a failed request.",
            [*_GENAI, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first token of successful streams (gen_ai.server.time_to_first_token).",
            _GENAI,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, of successful streams "
            "(gen_ai.server.time_per_output_token).",
            _GENAI,
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Input and output tokens per request, as the model counted them "
            "(gen_ai.client.token.usage); its _sum is the total.",
            [*_GENAI, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.audio = Counter(
            "modelport_audio_seconds",
            "Seconds of audio transcribed.",
            _LABELS,
            registry=registry,
        )
        self.images = Counter("modelport_images", "Images classified.", _LABELS, registry=registry)
        self.rows = Counter("modelport_rows", "Rows predicted.", _LABELS, registry=registry)
        self.overhead = Histogram(
            "modelport_gateway_overhead_seconds",
            "Time each request spent in Modelport itself (queueing, retries and fallbacks "
            "included), excluding the time its upstreams worked on it.",
            _LABELS,
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self._series: dict[tuple[str, str, str, int], _Series] = {}
        # What serves now, as (endpoint, revision) pairs; series of other revisions are
        # dropped once they were absent at two scrapes in a row (the first still shows their
        # last values), so retired revisions do not pile up over many rollouts.
        self._serving: Callable[[], Iterable[tuple[str, str]]] | None = None
        self._absent: set[tuple[str, str, str, int]] = set()
        self._live = LiveState()
        registry.register(self._live)

    # -- the journal's subscriber -------------------------------------------------------------

    def consume(self, records: Sequence[UsageRecord]) -> None:
        """Count a batch of usage records (the journal calls this on the event loop)."""
        series = self._series
        for record in records:
            status = record.status
            key = (record.endpoint, record.revision, record.task, status)
            one = series.get(key)
            if one is None:
                one = series[key] = _Series(self, key)
            one.requests.inc()
            latency_ms = record.latency_ms
            one.duration.observe(latency_ms / 1000)
            one.overhead.observe(max(latency_ms - record.upstream_ms, 0.0) / 1000)
            units = record.units
            if units.input_tokens:
                one.child("input").observe(units.input_tokens)
            if units.output_tokens:
                one.child("output").observe(units.output_tokens)
            if units.audio_seconds:
                one.child("audio").inc(units.audio_seconds)
            if units.images:
                one.child("images").inc(units.images)
            if units.rows:
                one.child("rows").inc(units.rows)
            ttft_ms = record.ttft_ms
            if ttft_ms is not None and status < 400:
                one.child("ttft").observe(ttft_ms / 1000)
                if units.output_tokens > 1:
                    per_token = (latency_ms - ttft_ms) / (units.output_tokens - 1)
                    one.child("tpot").observe(max(per_token, 0.0) / 1000)

    def optional_child(self, name: str, series: _Series) -> Any:
        """The child of a metric only some tasks have (tokens, audio, time to first token)."""
        if name in ("input", "output"):
            return self.tokens.labels(*series.genai, name)
        if name in ("ttft", "tpot"):
            return (self.ttft if name == "ttft" else self.tpot).labels(*series.genai)
        counter = {"audio": self.audio, "images": self.images, "rows": self.rows}[name]
        return counter.labels(*series.labels)

    # -- live state ---------------------------------------------------------------------------

    def watch(
        self,
        *,
        load: Callable[[], Iterable[Load]] | None = None,
        replicas: Callable[[], Iterable[ReplicaCount]] | None = None,
        rollouts: Callable[[], Iterable[RolloutProgress]] | None = None,
        budgets: Callable[[], Any] | None = None,
        serving: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        """Register the providers of live state read at each scrape. ``budgets`` returns an
        SLO snapshot (``SloBook.snapshot()``): ``Budget`` items, or a mapping of endpoint to
        per-objective remaining budgets (see ``budgets_of``)."""
        live = self._live
        if load is not None:
            live.load = load
        if replicas is not None:
            live.replicas = replicas
        if rollouts is not None:
            live.rollouts = rollouts
        if budgets is not None:
            live.budgets = budgets
        if serving is not None:
            self._serving = serving

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition Prometheus asked for (``Accept``), and its content type. Call on the
        event loop: the live-state providers read structures the loop changes."""
        self._forget_retired()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def _forget_retired(self) -> None:
        if self._serving is None:
            return
        serving = set(read(self._serving, "serving revisions"))
        absent = {key for key in self._series if (key[0], key[1]) not in serving}
        for key in absent & self._absent:
            self._series.pop(key).remove(key[3])
        self._absent = absent - self._absent


# -- the route ----------------------------------------------------------------------------------


class MetricsRoute:
    """``GET /metrics`` for a scraper that sends ``Authorization: Bearer <token>``; 401
    without a token ``authorized`` accepts. Runs on the event loop, where live state is read
    safely; rendering takes a few milliseconds, once per scrape."""

    def __init__(self, metrics: ModelportMetrics, authorized: Callable[[bytes], bool]) -> None:
        self._metrics = metrics
        self._authorized = authorized

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_json(send, 405, {"error": "/metrics answers GET"}, [(b"allow", b"GET")])
            return
        token = bearer_credential(header(scope, b"authorization"))
        if token is None or not self._authorized(token):
            await send_json(
                send,
                401,
                {
                    "error": "missing or wrong token: send 'Authorization: Bearer <token>' with "
                    "the admin token or MODELPORT_METRICS_TOKEN"
                },
                [(b"www-authenticate", b'Bearer realm="modelport"')],
            )
            return
        accept = header(scope, b"accept")
        body, content_type = self._metrics.render(accept.decode("latin-1") if accept else None)
        await send_bytes(send, 200, body, [(b"content-type", content_type.encode())])
