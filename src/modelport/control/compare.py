"""``modelport compare``: candidate model versions for one intent, scored side by side.

Each candidate runs in a temporary replica of its own (a backend group ``compare-<id>@c<n>``
that no snapshot routes to), started through the control plane's backend as a revision's
would be and always stopped afterwards, on error or cancellation too. The control plane
sends it the evaluation set over HTTP (V2 infer, as the gateway would, with the replica's
token), scores the answers (control/evaluation.py), then runs a short closed-loop latency
test of single-row requests, time-bounded. From the measured p95 and throughput it judges the
candidate against the intent: its SLO (p95), and its budget at the intent's peak traffic,
priced by the price book (the model version's unit prices) or else by the hardware's hourly
price over the measured throughput.

Candidates run one after another, so that one does not slow another's latency test; the
result is ranked best quality first (accuracy for classifiers), then lower p95.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import evaluation, registry
from modelport.control.deployment import replica_spec
from modelport.control.evaluation import EvalRow, SpeechSet, TabularSet, TextSet, label_text
from modelport.core.errors import InvalidRequest, ModelportError, NotFound, Unavailable
from modelport.core.intent import Intent, intent_digest
from modelport.core.names import parse_model_ref
from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.core.signature import DATATYPES, Signature
from modelport.core.usage import UNITS_HEADER, Units
from modelport.observability.pricing import HARDWARE_UNIT, NANO_PER_USD, PriceBook
from modelport.runtimes.registry import REMOTE_RUNTIMES
from modelport.store.compare_tables import ComparisonRow
from modelport.store.tables import ModelVersionRow

if TYPE_CHECKING:
    from modelport.control.plane import ControlPlane

__all__ = [
    "MAX_CANDIDATES",
    "CompareRequest",
    "EvalFile",
    "Prepared",
    "compare",
    "list_comparisons",
    "prepare",
]

log = logging.getLogger("modelport.control.compare")

MAX_CANDIDATES = 8
# Scored in requests of this many rows: well under the replica's max_request_rows, and small
# enough that one request's JSON stays far below its body limit.
_SCORE_BATCH = 256
_REQUEST_TIMEOUT_S = 30.0
_READY_POLL_S = 0.1
_FAILED_AFTER_RESTARTS = 3  # as the control plane's (plane.FAILED_AFTER_RESTARTS)
_HOURS_PER_MONTH = 730
_TASKS = ("tabular", "chat", "completion", "asr")
_TEXT_TASKS = ("chat", "completion")
#: What a candidate's answers are scored with, per task; the first decides the ranking
#: (``_LOWER_IS_BETTER`` says which way), then p95.
_METRICS = {
    "tabular": ("accuracy", "macro_f1"),
    "chat": ("exact_match", "token_f1"),
    "completion": ("exact_match", "token_f1"),
    "asr": ("word_error_rate",),
}
_LOWER_IS_BETTER = {"word_error_rate"}
_DEFAULT_MAX_TOKENS = 64

EvalSet = TabularSet | TextSet | SpeechSet


class EvalFile(BaseModel):
    """The evaluation set: the file's text and its format."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "jsonl"] = "csv"
    text: str = Field(max_length=16 * 1024 * 1024)


class CompareRequest(BaseModel):
    """``POST /api/v1/compare``."""

    model_config = ConfigDict(extra="forbid")

    intent: str = Field(max_length=64 * 1024)
    filename: str = Field(default="modelport.yaml", max_length=255)
    candidates: list[str] = Field(min_length=1, max_length=MAX_CANDIDATES)
    eval: EvalFile
    duration_s: float = Field(default=3.0, ge=0.5, le=30.0, description="Latency test length.")
    concurrency: int = Field(default=2, ge=1, le=32, description="Latency test clients.")
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="chat/completion: tokens each answer may take (default: the intent's "
        "traffic.avg_output_tokens, else 64).",
    )


@dataclass(frozen=True, slots=True)
class _Candidate:
    ref: str
    model: str
    version: int
    runtime: str
    spec: ReplicaSpec
    data: EvalSet


@dataclass(frozen=True, slots=True)
class Prepared:
    """A comparison checked and ready to run: nothing of it has started yet."""

    id: str
    intent: Intent
    digest: str
    candidates: tuple[_Candidate, ...]
    rows: int
    hardware: str
    task: str
    max_tokens: int


def prepare(plane: ControlPlane, intent: Intent, body: CompareRequest) -> Prepared:
    """Resolve and check every candidate and the evaluation set against each signature; any
    mistake is an InvalidRequest naming the candidate, or the column and line. Blocking (a
    database session): call in a thread."""
    task = intent.task.value if hasattr(intent.task, "value") else str(intent.task)
    if task not in _TASKS:
        raise InvalidRequest(
            f"compare scores {', '.join(_TASKS)} candidates for now; this intent's task is {task}",
            param="task",
        )
    if len(set(body.candidates)) != len(body.candidates):
        duplicate = next(c for c in body.candidates if body.candidates.count(c) > 1)
        raise InvalidRequest(f"candidate '{duplicate}' is named twice", param="candidates")
    columns, examples = evaluation.parse_eval(body.eval.text, body.eval.format)
    comparison = secrets.token_hex(4)
    candidates = []
    with plane.db.session() as session:
        for index, ref in enumerate(body.candidates):
            param = f"candidates[{index}]"
            try:
                version = registry.resolve(session, parse_model_ref(ref))
            except (NotFound, InvalidRequest) as exc:
                raise InvalidRequest(
                    f"candidate '{ref[:80]}': {exc.message}", param=param, candidate=ref[:80]
                ) from exc
            if version.model.task != task:
                raise InvalidRequest(
                    f"candidate '{ref}' is a {version.model.task} model; the intent's task is "
                    f"{task}",
                    param=param,
                    candidate=ref,
                )
            if version.runtime in REMOTE_RUNTIMES:
                raise InvalidRequest(
                    f"candidate '{ref}' is served by an external server ({version.runtime}): "
                    "compare runs local replicas only",
                    param=param,
                    candidate=ref,
                )
            signature = Signature.model_validate(version.signature)
            try:
                data = _read_set(task, columns, examples, signature)
            except InvalidRequest as exc:
                exc.details.setdefault("candidate", ref)
                if exc.details.get("param") == "candidates":
                    exc.details["param"] = param
                raise
            spec = _spec(plane, intent, comparison, index, version)
            candidates.append(
                _Candidate(ref, version.model.name, version.version, version.runtime, spec, data)
            )
    hardware = intent.resources.hardware
    return Prepared(
        id=comparison,
        intent=intent,
        digest=intent_digest(intent),
        candidates=tuple(candidates),
        rows=len(examples),
        hardware="cpu" if hardware == "auto" else hardware,
        task=task,
        max_tokens=body.max_tokens or intent.traffic.avg_output_tokens or _DEFAULT_MAX_TOKENS,
    )


def _read_set(
    task: str, columns: list[str], examples: list[EvalRow], signature: Signature
) -> EvalSet:
    if task == "tabular":
        return evaluation.tabular_set(columns, examples, signature)
    if task == "asr":
        return evaluation.speech_set(columns, examples)
    return evaluation.text_set(columns, examples)


def _spec(
    plane: ControlPlane,
    intent: Intent,
    comparison: str,
    index: int,
    version: ModelVersionRow,
) -> ReplicaSpec:
    """The replica a revision of this version would run (control/deployment.py's spec, with
    the intent's runtime options), in a group of its own: ``compare-<id>@c<n>``."""
    return replica_spec(
        plane.settings,
        plane.artifacts,
        version,
        endpoint=f"compare-{comparison}",
        revision=f"c{index + 1}",
        options=intent.runtime_options,
    )


async def compare(
    plane: ControlPlane, prepared: Prepared, *, duration_s: float, concurrency: int
) -> list[dict[str, Any]]:
    """Run, score and time each candidate in turn; the results ranked."""
    results = []
    for candidate in prepared.candidates:
        results.append(await _run(plane, prepared, candidate, duration_s, concurrency))
    return rank(results)


def rank(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best on the task's first metric first (highest accuracy or exact match, lowest word
    error rate), then on its others, then lower p95 (none: last among equals)."""

    def key(result: dict[str, Any]) -> tuple[float, ...]:
        p95 = result["latency"]["p95_ms"]
        scores = [
            value if name in _LOWER_IS_BETTER else -value
            for name, value in result["metrics"].items()
        ]
        return (*scores, p95 if p95 is not None else math.inf)

    ranked = sorted(results, key=key)
    for position, result in enumerate(ranked, 1):
        result["rank"] = position
    return ranked


async def _run(
    plane: ControlPlane,
    prepared: Prepared,
    candidate: _Candidate,
    duration_s: float,
    concurrency: int,
) -> dict[str, Any]:
    spec = candidate.spec
    token = secrets.token_urlsafe(24).encode()
    try:
        await plane.backend.deploy(spec, 1, token)
        upstream = await _ready(plane, candidate, plane.settings.worker_start_timeout_s)
        base = f"{'https' if upstream.tls else 'http'}://{upstream.host}:{upstream.port}"
        headers = {WORKER_TOKEN_HEADER.decode(): token.decode()}
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=_REQUEST_TIMEOUT_S
        ) as client:
            caller = _Caller(client, candidate, prepared.task, prepared.max_tokens)
            predicted = await caller.score()
            per_1k = caller.units_per_1k()
            latency = await _latency(caller, duration_s, concurrency)
    finally:
        # Stopped whatever happened, a cancelled request included: shielded, so that the
        # cancellation that ends this coroutine does not also cut the stop short.
        await asyncio.shield(plane.backend.remove(spec.group))
    result: dict[str, Any] = {
        "candidate": candidate.ref,
        "model": candidate.model,
        "version": candidate.version,
        "runtime": candidate.runtime,
        "rows": len(predicted),
        "metrics": _metrics(prepared.task, _expected(candidate.data), predicted),
        "latency": latency,
    }
    result.update(_judge(plane.prices, prepared, candidate, latency, per_1k))
    return result


def _expected(data: EvalSet) -> list[str]:
    if isinstance(data, TabularSet):
        return data.labels
    if isinstance(data, TextSet):
        return data.answers
    return data.transcripts


def _metrics(task: str, expected: list[str], predicted: list[str]) -> dict[str, float]:
    functions = {
        "accuracy": evaluation.accuracy,
        "macro_f1": evaluation.macro_f1,
        "exact_match": evaluation.exact_match,
        "token_f1": evaluation.token_f1,
        "word_error_rate": evaluation.word_error_rate,
    }
    scores = {}
    for name in _METRICS[task]:
        value = functions[name](expected, predicted)
        scores[name] = round(value, 6) if math.isfinite(value) else value
    return scores


class _Caller:
    """Sends one candidate's replica its examples, as the gateway would, and reads its
    answers as text: a class, a reply or a transcript. Sums the usage units the replica
    reports while scoring, for pricing."""

    def __init__(
        self, client: httpx.AsyncClient, candidate: _Candidate, task: str, max_tokens: int
    ) -> None:
        self.client = client
        self.candidate = candidate
        self.task = task
        self.max_tokens = max_tokens
        self._units: dict[str, float] = dict.fromkeys(
            ("rows", "input_tokens", "output_tokens", "audio_seconds", "images"), 0
        )
        self._examples = 0

    @property
    def size(self) -> int:
        data = self.candidate.data
        return len(data.rows) if isinstance(data, TabularSet) else len(_expected(data))

    async def score(self) -> list[str]:
        """Every example's answer, in order: tabular rows in requests of _SCORE_BATCH."""
        predicted: list[str] = []
        step = _SCORE_BATCH if isinstance(self.candidate.data, TabularSet) else 1
        for start in range(0, self.size, step):
            answers, units = await self.call(start, min(step, self.size - start))
            predicted += answers
            self._examples += len(answers)
            for name in self._units:
                self._units[name] += getattr(units, name)
        return predicted

    def units_per_1k(self) -> Units:
        """What 1,000 one-example requests use, from the mean of those scored."""
        n = max(self._examples, 1)
        units = self._units
        return Units(
            requests=1000,
            rows=round(1000 * units["rows"] / n),
            input_tokens=round(1000 * units["input_tokens"] / n),
            output_tokens=round(1000 * units["output_tokens"] / n),
            audio_seconds=round(1000 * units["audio_seconds"] / n, 3),
            images=round(1000 * units["images"] / n),
        )

    async def call(self, start: int, count: int) -> tuple[list[str], Units]:
        """One request of ``count`` examples from ``start``: their answers and units."""
        data, ref, spec = self.candidate.data, self.candidate.ref, self.candidate.spec
        line: int | None = None
        try:
            if isinstance(data, TabularSet):
                path = f"/v2/models/{spec.endpoint}/infer"
                response = await self.client.post(
                    path, json=_tabular_body(data, data.rows[start : start + count])
                )
            elif isinstance(data, TextSet):
                line = data.lines[start]
                path, body = self._text_request(data.prompts[start])
                response = await self.client.post(path, json=body)
            else:
                line = data.lines[start]
                response = await self.client.post(
                    "/v1/audio/transcriptions",
                    files={"file": ("audio", data.audio[start])},
                    data={"response_format": "json"},
                )
        except httpx.HTTPError as exc:
            raise Unavailable(f"candidate '{ref}' did not answer: {exc!r}", candidate=ref) from exc
        if response.status_code != 200:
            _refused(response, ref, line)
        answer = response.json()
        units = Units.decode(response.headers.get(UNITS_HEADER.decode(), "").encode())
        if isinstance(data, TabularSet):
            return _labels(answer, count, ref), units
        if isinstance(data, TextSet):
            choice = (answer.get("choices") or [{}])[0]
            text = choice.get("message", {}).get("content") if "message" in choice else None
            return [str(text if text is not None else choice.get("text") or "")], units
        return [str(answer.get("text", ""))], units

    def _text_request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.candidate.spec.endpoint,
            "max_tokens": self.max_tokens,
            "temperature": 0,  # the likeliest answer: scores that do not change run to run
        }
        if self.task == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            return "/v1/chat/completions", body
        body["prompt"] = prompt
        return "/v1/completions", body


def _refused(response: httpx.Response, ref: str, line: int | None) -> None:
    """A replica's refusal of one example (a prompt past the context, a recording it cannot
    decode) is the evaluation file's mistake: a 400 naming its line. Anything else, or a
    refusal of checked tabular rows, is the candidate's failure."""
    try:
        error = response.json().get("error", {})
        message = error.get("message", "") if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text[:300]
    if line is not None and 400 <= response.status_code < 500 and response.status_code != 429:
        raise InvalidRequest(
            f"line {line} of the evaluation file: candidate '{ref}' refused it: {message}",
            param="eval",
            line=line,
            candidate=ref,
        )
    raise Unavailable(
        f"candidate '{ref}' answered {response.status_code}: {message[:300]}", candidate=ref
    )


async def _ready(plane: ControlPlane, candidate: _Candidate, timeout_s: float) -> Upstream:
    group = candidate.spec.group
    deadline = time.monotonic() + timeout_s
    while True:
        ready = plane.backend.ready(group)
        if ready:
            return ready[0]
        failing = [r for r in plane.backend.status(group) if r.restarts >= _FAILED_AFTER_RESTARTS]
        if failing:
            raise Unavailable(
                f"candidate '{candidate.ref}' could not start: {failing[0].last_error}",
                candidate=candidate.ref,
            )
        if time.monotonic() > deadline:
            raise Unavailable(
                f"candidate '{candidate.ref}' was not ready within {timeout_s:g} s",
                candidate=candidate.ref,
            )
        await asyncio.sleep(_READY_POLL_S)


def _tabular_body(data: TabularSet, rows: Sequence[list[float]]) -> dict[str, Any]:
    flat = [value for row in rows for value in row]
    if DATATYPES.get(data.datatype, "").startswith(("int", "uint")):
        flat = [int(value) for value in flat]
    return {
        "inputs": [
            {
                "name": data.input_name,
                "shape": [len(rows), len(data.features)],
                "datatype": data.datatype,
                "data": flat,
            }
        ]
    }


def _labels(answer: dict[str, Any], rows: int, ref: str) -> list[str]:
    """Each row's predicted class: an output named like a label, else the arg-max of a
    [rows, classes] output (probabilities or scores)."""
    outputs = {o["name"]: o for o in answer.get("outputs", [])}
    for name in ("label", "labels", "output_label", "class", "classes"):
        output = outputs.get(name)
        if output is not None and len(output["data"]) == rows:
            return [label_text(value) for value in output["data"]]
    for output in outputs.values():
        shape = output.get("shape", [])
        if len(shape) == 2 and shape[0] == rows and shape[1] > 1:
            width, data = shape[1], output["data"]
            rows_of = [data[i * width : (i + 1) * width] for i in range(rows)]
            return [str(row.index(max(row))) for row in rows_of]
    raise Unavailable(
        f"candidate '{ref}' answered no output that holds a class per row "
        f"(outputs: {', '.join(outputs) or 'none'})",
        candidate=ref,
    )


async def _latency(caller: _Caller, duration_s: float, concurrency: int) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients each send one single-example request after
    another (the evaluation examples in turn) until ``duration_s`` is up; the requests in
    flight then finish (each bounded by the request timeout)."""
    size = caller.size
    latencies: list[float] = []
    errors = 0
    started = time.monotonic()
    deadline = started + duration_s

    async def loop(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                await caller.call(i % size, 1)
            except ModelportError:
                errors += 1
            else:
                latencies.append((time.perf_counter() - sent) * 1000)
            i += concurrency

    await asyncio.gather(*(loop(n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_s": round(elapsed, 3),
        "concurrency": concurrency,
        "p50_ms": _percentile(ordered, 0.50),
        "p95_ms": _percentile(ordered, 0.95),
        "throughput_rps": round(len(latencies) / elapsed, 3) if elapsed > 0 else 0.0,
    }


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None without any)."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


def _judge(
    prices: PriceBook,
    prepared: Prepared,
    candidate: _Candidate,
    latency: dict[str, Any],
    per_1k_units: Units,
) -> dict[str, Any]:
    """Cost per 1,000 requests, monthly cost at the intent's peak, and whether the SLO and
    the budget are met (None where the intent sets no target, or nothing prices it)."""
    intent = prepared.intent
    now = time.time()
    throughput: float = latency["throughput_rps"]
    peak = intent.traffic.peak_rps
    model_version = f"{candidate.model}:{candidate.version}"
    # The model version's unit prices only: an endpoint's own price would be the same for
    # every candidate, and the endpoint may not exist yet.
    unit_prices = prices.unit_prices("", model_version, now)
    per_1k: float | None = None
    monthly: float | None = None
    basis: str | None = None
    if unit_prices:
        nano = PriceBook.exact_cost(unit_prices, per_1k_units)
        per_1k = nano / NANO_PER_USD
        basis = f"price book: {model_version}"
        if peak is not None:
            monthly = per_1k * peak * 3600 * _HOURS_PER_MONTH / 1000
    else:
        hourly = _hourly_usd(prices, prepared.hardware, now)
        if hourly is not None and throughput > 0:
            per_1k = hourly / (throughput * 3600) * 1000
            basis = f"hardware: {prepared.hardware} at ${hourly:g}/h over measured throughput"
            if peak is not None:
                replicas = max(1, math.ceil(peak / throughput))
                monthly = hourly * replicas * _HOURS_PER_MONTH
    p95 = latency["p95_ms"]
    target = intent.slo.p95_latency_ms
    budget = intent.budget.monthly_usd
    return {
        "cost_per_1k_usd": round(per_1k, 9) if per_1k is not None else None,
        "cost_basis": basis,
        "monthly_usd_at_peak": round(monthly, 2) if monthly is not None else None,
        "meets_slo": None if target is None or p95 is None else p95 <= target,
        "meets_budget": None if budget is None or monthly is None else monthly <= budget,
    }


def _hourly_usd(prices: PriceBook, hardware: str, now: float) -> float | None:
    """The hardware's price per replica hour: the price book's, else the catalog's."""
    nano = prices.price_at("hardware", hardware, HARDWARE_UNIT, now)
    if nano is not None:
        return nano / NANO_PER_USD
    try:
        from modelport.planning.catalog import load_catalog

        return float(load_catalog().get(hardware).hourly_usd)
    except (ImportError, ModelportError, AttributeError, TypeError) as exc:
        log.info("no hourly price for hardware %s: %s", hardware, exc)
        return None


def store(
    plane: ControlPlane, prepared: Prepared, results: list[dict[str, Any]], *, created_by: str
) -> dict[str, Any]:
    """Keep a comparison; returns it as the API shows it."""
    intent = prepared.intent
    result = {
        "endpoint": intent.endpoint,
        "task": prepared.task,
        "metrics": list(_METRICS[prepared.task]),
        "intent_digest": prepared.digest,
        "hardware": prepared.hardware,
        "eval": {"rows": prepared.rows, "columns": _columns(prepared.candidates[0].data)},
        "slo": {"p95_latency_ms": intent.slo.p95_latency_ms},
        "traffic": {"peak_rps": intent.traffic.peak_rps},
        "budget": {"monthly_usd": intent.budget.monthly_usd},
        "ranking": [r["candidate"] for r in results],
        "candidates": results,
    }
    with plane.db.session() as session:
        row = ComparisonRow(
            endpoint=intent.endpoint,
            intent_digest=prepared.digest,
            result=result,
            created_by=created_by,
        )
        session.add(row)
        session.flush()
        return _public(row)


def _columns(data: EvalSet) -> dict[str, str]:
    """Which column the comparison read as what."""
    if isinstance(data, TabularSet):
        return {"label": data.label_column}
    if isinstance(data, TextSet):
        return {"prompt": data.prompt_column, "expected": data.answer_column}
    return {"audio": data.audio_column, "transcript": data.transcript_column}


def _public(row: ComparisonRow) -> dict[str, Any]:
    return {
        "id": row.id,
        **row.result,
        "intent_digest": row.intent_digest,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


def list_comparisons(session: Session, endpoint: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """An endpoint's comparisons, newest first."""
    rows = session.scalars(
        select(ComparisonRow)
        .where(ComparisonRow.endpoint == endpoint)
        .order_by(ComparisonRow.id.desc())
        .limit(limit)
    )
    return [_public(row) for row in rows]
