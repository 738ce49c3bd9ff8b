"""``modelport compare``: candidate model versions for one intent, scored side by side.

Each candidate runs in a temporary replica of its own (a backend group ``compare-<id>@c<n>``
that no snapshot routes to), started through the control plane's backend as a revision's
would be and always stopped afterwards, on error or cancellation too. The control plane
sends it the evaluation set over HTTP (V2 infer, as the gateway would, with the replica's
token; control/compare_calls.py), scores the answers (control/evaluation.py), then runs a
short closed-loop latency test of single-row requests, time-bounded. From the measured p95
and throughput it judges the candidate against the intent: its SLO (p95), and its budget at
the intent's peak traffic, priced by the price book (the model version's unit prices) or
else by the hardware's hourly price over the measured throughput.

Candidates run one after another, so that one does not slow another's latency test; the
result is ranked best quality first (accuracy for classifiers), then lower p95.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import evaluation, registry
from modelport.control.compare_calls import Caller, Candidate, EvalSet, expected, time_calls
from modelport.control.deployment import replica_spec
from modelport.control.evaluation import EvalRow, TabularSet, TextSet
from modelport.core.errors import InvalidRequest, ModelportError, NotFound, Unavailable
from modelport.core.intent import Intent, intent_digest
from modelport.core.names import parse_model_ref
from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.core.signature import Signature
from modelport.core.usage import Units
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
_REQUEST_TIMEOUT_S = 30.0
_READY_POLL_S = 0.1
_FAILED_AFTER_RESTARTS = 3  # as the control plane's (plane.FAILED_AFTER_RESTARTS)
_HOURS_PER_MONTH = 730
_TASKS = ("tabular", "chat", "completion", "asr")
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
class Prepared:
    """A comparison checked and ready to run: nothing of it has started yet."""

    id: str
    intent: Intent
    digest: str
    candidates: tuple[Candidate, ...]
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
                Candidate(ref, version.model.name, version.version, version.runtime, spec, data)
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
    candidate: Candidate,
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
            caller = Caller(client, candidate, prepared.task, prepared.max_tokens)
            predicted = await caller.score()
            per_1k = caller.units_per_1k()
            latency = await time_calls(caller, duration_s, concurrency)
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
        "metrics": _metrics(prepared.task, expected(candidate.data), predicted),
        "latency": latency,
    }
    result.update(_judge(plane.prices, prepared, candidate, latency, per_1k))
    return result


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


async def _ready(plane: ControlPlane, candidate: Candidate, timeout_s: float) -> Upstream:
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


def _judge(
    prices: PriceBook,
    prepared: Prepared,
    candidate: Candidate,
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
