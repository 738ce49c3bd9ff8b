"""``modelport bench``: a revision's latency and throughput at several concurrencies, measured
on this machine and stored as a profile the planner sizes replicas from.

The load goes straight to the revision's ready replicas, in each replica's own protocol (V2
``infer`` for tabular, vision and custom models; OpenAI for chat, completion, embedding and
speech), with the secret the gateway sends them: nothing is metered, limited or budgeted, and
the gateway's own work is not in the figures. At each concurrency level every replica gets
that many closed-loop callers (one request in flight each, the next sent when the answer
arrives) for ``duration`` seconds, so each point says what ONE replica does with that many
requests in flight. The load runs in a thread with an event loop of its own, so the server's
loop (the gateway's too) never waits on it, and the whole run is bounded by ``MAX_TOTAL_S``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import os
import platform
import statistics
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.deployment import Deployment
from modelport.core.errors import Conflict, InvalidRequest
from modelport.core.replica import WORKER_TOKEN_HEADER
from modelport.core.routing import Upstream
from modelport.store.planning_tables import BenchProfileRow

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_TOTAL_S",
    "BenchPlan",
    "BenchRunner",
    "Sample",
    "check_plan",
    "list_profiles",
    "machine_facts",
    "profile_public",
    "profiles_of_version",
    "sample_request",
    "store_profile",
]

MAX_TOTAL_S = 60.0  # the whole run, stragglers included
MAX_LEVELS = 8
MAX_CONCURRENCY = 64  # callers per replica at one level
MIN_DURATION_S = 0.5
# Levels share the total; what is left after the levels is the stragglers' grace.
_LOAD_SHARE_S = 50.0
_WARMUP_S = 0.5
_WARMUP_CALLS = 20
_CALL_TIMEOUT_S = 10.0
_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again")


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """What to measure: the concurrency levels (callers per replica) and seconds at each."""

    concurrency: tuple[int, ...]
    duration_s: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One request, sent again and again: its path, body and content type, and a short
    description stored with the profile."""

    path: str
    body: bytes
    content_type: str
    describe: Mapping[str, Any]


@dataclass(slots=True)
class _Level:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""


def check_plan(concurrency: Sequence[int], duration_s: float) -> BenchPlan:
    """The levels in increasing order, or ``InvalidRequest`` naming the field at fault."""
    if not 1 <= len(concurrency) <= MAX_LEVELS:
        raise InvalidRequest(
            f"concurrency: give 1 to {MAX_LEVELS} levels, got {len(concurrency)}",
            field="concurrency",
            param="concurrency",
        )
    for index, level in enumerate(concurrency):
        if isinstance(level, bool) or not 1 <= level <= MAX_CONCURRENCY:
            raise InvalidRequest(
                f"concurrency[{index}]: must be 1 to {MAX_CONCURRENCY} callers per replica, "
                f"got {level}",
                field=f"concurrency[{index}]",
                param=f"concurrency[{index}]",
            )
    levels = tuple(sorted(set(concurrency)))
    if not math.isfinite(duration_s) or duration_s < MIN_DURATION_S:
        raise InvalidRequest(
            f"duration: must be at least {MIN_DURATION_S:g}s per level, got {duration_s:g}s",
            field="duration",
            param="duration",
        )
    if duration_s * len(levels) > _LOAD_SHARE_S:
        raise InvalidRequest(
            f"duration: {len(levels)} level(s) of {duration_s:g}s is "
            f"{duration_s * len(levels):g}s; a bench runs at most {_LOAD_SHARE_S:g}s of load "
            f"(shorten duration or give fewer levels)",
            field="duration",
            param="duration",
        )
    return BenchPlan(levels, duration_s)


# --- the request ----------------------------------------------------------------------------


def _zeros(datatype: str, count: int) -> list[Any]:
    if datatype == "BOOL":
        return [False] * count
    if datatype.startswith("FP"):
        return [0.0] * count
    return [0] * count


def _v2_sample(deployment: Deployment) -> Sample:
    """Zeros of each input's shape (``-1`` read as 1): one row, one image."""
    numeric = [spec for spec in deployment.signature.inputs if spec.datatype != "BYTES"]
    required = [spec for spec in numeric if not spec.optional]
    # Optional inputs are alternatives (pixels or an encoded image): send the first numeric.
    chosen = required or numeric[:1]
    if not chosen or any(
        spec.datatype == "BYTES" and not spec.optional for spec in deployment.signature.inputs
    ):
        raise InvalidRequest(
            f"revision {deployment.label} takes no numeric input to build a sample from "
            "(its signature's inputs are bytes or missing): bench it with your own load tool",
            field="revision",
            param="revision",
        )
    inputs = []
    for spec in chosen:
        shape = [1 if size < 0 else size for size in spec.shape]
        count = math.prod(shape)
        inputs.append(
            {
                "name": spec.name,
                "shape": shape,
                "datatype": spec.datatype,
                "data": _zeros(spec.datatype, count),
            }
        )
    body = {"inputs": inputs}
    return Sample(
        f"/v2/models/{deployment.spec.endpoint}/infer",
        orjson.dumps(body),
        "application/json",
        {"protocol": "v2", "inputs": {i["name"]: i["shape"] for i in inputs}},
    )


def _silence_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def _multipart(fields: Mapping[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "modelport-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def sample_request(
    deployment: Deployment, *, input_tokens: int | None, output_tokens: int | None
) -> Sample:
    """The request the bench sends, built from the revision's task and signature: zeros of
    the input shape (V2), a prompt of ``input_tokens`` words asking for ``output_tokens``
    (chat, completion), a sentence (embedding), a second of silence (speech)."""
    spec = deployment.spec
    words = max(1, input_tokens if input_tokens is not None else 32)
    max_tokens = max(1, output_tokens if output_tokens is not None else 16)
    prompt = " ".join(itertools.islice(itertools.cycle(_WORDS), words))
    if spec.task == "chat":
        body: dict[str, Any] = {
            "model": spec.endpoint,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
        }
        describe = {"protocol": "openai", "prompt_words": words, "max_tokens": max_tokens}
        return Sample("/v1/chat/completions", orjson.dumps(body), "application/json", describe)
    if spec.task == "completion":
        body = {"model": spec.endpoint, "prompt": prompt, "max_tokens": max_tokens}
        describe = {"protocol": "openai", "prompt_words": words, "max_tokens": max_tokens}
        return Sample("/v1/completions", orjson.dumps(body), "application/json", describe)
    if spec.task == "embedding":
        body = {"model": spec.endpoint, "input": "The quick brown fox jumps over the lazy dog."}
        describe = {"protocol": "openai", "input": "one sentence"}
        return Sample("/v1/embeddings", orjson.dumps(body), "application/json", describe)
    if spec.task == "asr":
        content, content_type = _multipart({"model": spec.endpoint}, "bench.wav", _silence_wav())
        describe = {"protocol": "openai", "audio_seconds": 1.0}
        return Sample("/v1/audio/transcriptions", content, content_type, describe)
    return _v2_sample(deployment)


# --- the machine ----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 1024**3, 1)


def machine_facts() -> dict[str, Any]:
    """What a profile was measured on: CPU model, cores (all, and those this process may
    use), memory, platform. Blocks briefly (reads /proc)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# --- the load -------------------------------------------------------------------------------


def _percentile(ordered: Sequence[float], share: float) -> float:
    """Linear interpolation between closest ranks (``ordered`` sorted, not empty)."""
    if len(ordered) == 1:
        return ordered[0]
    rank = share * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _point(concurrency: int, level: _Level, elapsed_s: float, replicas: int) -> dict[str, Any]:
    ordered = sorted(level.latencies_ms)
    done = len(ordered)

    def pct(share: float) -> float | None:
        return round(_percentile(ordered, share), 3) if ordered else None

    point: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": done + level.errors,
        "rps": round(done / elapsed_s / replicas, 3) if elapsed_s > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ordered), 3) if ordered else None,
        "errors": level.errors,
    }
    if level.last_error:
        point["last_error"] = level.last_error
    return point


async def _call(
    client: httpx.AsyncClient, target: Upstream, sample: Sample, headers: Mapping[str, str]
) -> tuple[float, str | None]:
    scheme = "https" if target.tls else "http"
    started = time.perf_counter()
    try:
        response = await client.post(
            f"{scheme}://{target.host}:{target.port}{sample.path}",
            content=sample.body,
            headers=headers,
        )
    except httpx.HTTPError as exc:
        return (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}"[:200]
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        return elapsed_ms, f"HTTP {response.status_code}: {response.text[:160]}"
    return elapsed_ms, None


async def _caller(
    client: httpx.AsyncClient,
    target: Upstream,
    sample: Sample,
    headers: Mapping[str, str],
    until: float,
    level: _Level | None,
    max_calls: int | None = None,
) -> None:
    calls = 0
    while time.monotonic() < until and (max_calls is None or calls < max_calls):
        elapsed_ms, error = await _call(client, target, sample, headers)
        calls += 1
        if level is None:
            continue
        if error is None:
            level.latencies_ms.append(elapsed_ms)
        else:
            level.errors += 1
            level.last_error = error


async def _level(
    client: httpx.AsyncClient,
    targets: Sequence[Upstream],
    sample: Sample,
    headers: Mapping[str, str],
    concurrency: int,
    duration_s: float,
    hard_deadline: float,
) -> dict[str, Any]:
    level = _Level()
    started = time.monotonic()
    until = started + duration_s
    tasks = [
        asyncio.create_task(_caller(client, target, sample, headers, until, level))
        for target in targets
        for _ in range(concurrency)
    ]
    # Callers stop starting calls at ``until``; calls still running finish, up to the grace.
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, hard_deadline - time.monotonic()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        level.errors += len(pending)
        level.last_error = f"{len(pending)} call(s) still running when the bench ran out of time"
    # Throughput over the measured window: calls finished after ``until`` add to it a little,
    # as they would have been replaced by others had the run gone on.
    elapsed = max(time.monotonic(), until) - started
    return _point(concurrency, level, elapsed, len(targets))


async def _run(
    targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + MAX_TOTAL_S
    secret = token.decode("latin-1")
    headers = {
        WORKER_TOKEN_HEADER.decode(): secret,
        "authorization": f"Bearer {secret}",  # replicas that are servers of their own (vLLM)
        "content-type": sample.content_type,
        "x-request-id": "modelport-bench",
    }
    most = max(plan.concurrency) * len(targets)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    timeout = httpx.Timeout(_CALL_TIMEOUT_S)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        # Warm up each replica (connections, lazy first-call work); not measured.
        warm_until = time.monotonic() + _WARMUP_S
        await asyncio.gather(
            *(_caller(client, t, sample, headers, warm_until, None, _WARMUP_CALLS) for t in targets)
        )
        points = []
        for index, concurrency in enumerate(plan.concurrency):
            # Each level's stragglers get what the levels after it leave of the total.
            later = plan.duration_s * (len(plan.concurrency) - index - 1)
            hard = min(deadline - later, time.monotonic() + plan.duration_s + _CALL_TIMEOUT_S)
            points.append(
                await _level(client, targets, sample, headers, concurrency, plan.duration_s, hard)
            )
        return points


def drive(
    targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan
) -> list[dict[str, Any]]:
    """Run the load and return one point per level (per replica). Blocks for at most
    ``MAX_TOTAL_S``: call it in a thread; it runs an event loop of its own."""
    return asyncio.run(_run(targets, token, sample, plan))


class BenchRunner:
    """Runs one bench at a time per server: two at once would each measure the other."""

    def __init__(self) -> None:
        self._busy = asyncio.Lock()

    async def run(
        self, targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan
    ) -> list[dict[str, Any]]:
        """``drive`` in a thread; ``Conflict`` while another bench runs."""
        if self._busy.locked():
            raise Conflict("another bench is running on this server: try again when it ends")
        async with self._busy:
            return await asyncio.to_thread(drive, targets, token, sample, plan)


# --- stored profiles ------------------------------------------------------------------------


def store_profile(
    session: Session,
    *,
    deployment: Deployment,
    hardware: str,
    replicas: int,
    plan: BenchPlan,
    machine: Mapping[str, Any],
    points: list[dict[str, Any]],
    sample: Sample,
    created_by: str,
) -> BenchProfileRow:
    """Store one run; the row, flushed (its id set)."""
    spec = deployment.spec
    row = BenchProfileRow(
        endpoint=spec.endpoint,
        revision=spec.revision,
        model=spec.model,
        model_version=spec.version,
        task=spec.task,
        hardware=hardware,
        replicas=replicas,
        duration_s=plan.duration_s,
        machine=dict(machine),
        points=points,
        sample=dict(sample.describe),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def profile_public(row: BenchProfileRow) -> dict[str, Any]:
    """A stored profile as the API shows it."""
    return {
        "id": row.id,
        "endpoint": row.endpoint,
        "revision": row.revision,
        "model": f"{row.model}:{row.model_version}",
        "task": row.task,
        "hardware": row.hardware,
        "replicas": row.replicas,
        "duration_s": row.duration_s,
        "machine": row.machine,
        "points": row.points,
        "sample": row.sample,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


def list_profiles(session: Session, endpoint: str, limit: int = 100) -> list[BenchProfileRow]:
    """An endpoint's profiles, newest first."""
    return list(
        session.scalars(
            select(BenchProfileRow)
            .where(BenchProfileRow.endpoint == endpoint)
            .order_by(BenchProfileRow.id.desc())
            .limit(limit)
        )
    )


def profiles_of_version(session: Session, model: str, version: int) -> list[BenchProfileRow]:
    """The newest profile of a model version on each hardware type (whatever endpoint ran
    it): what the planner sizes from."""
    rows = session.scalars(
        select(BenchProfileRow)
        .where(BenchProfileRow.model == model, BenchProfileRow.model_version == version)
        .order_by(BenchProfileRow.id.desc())
    )
    newest: dict[str, BenchProfileRow] = {}
    for row in rows:
        newest.setdefault(row.hardware, row)
    return list(newest.values())
