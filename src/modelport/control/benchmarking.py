"""``modelport bench``: a revision's latency and throughput at several concurrencies, measured
on this machine and stored as a profile the planner sizes replicas from.

The load goes straight to the revision's ready replicas, in each replica's own protocol (V2
``infer`` for tabular, vision and custom models; OpenAI for chat, completion, embedding and
speech), with the secret the gateway sends them: nothing is metered, limited or budgeted, and
the gateway's own work is not in the figures. At each concurrency level every replica gets
that many closed-loop callers (one request in flight each, the next sent when the answer
arrives) for ``duration`` seconds, so each point says what ONE replica does with that many
requests in flight; then open-loop runs below saturation. ``bench_load`` drives it (in a
process of its own, so neither the server's loop nor its garbage collections get in the way;
bounded by ``MAX_TOTAL_S``); this module decides what to send and stores what was measured.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import platform
import wave
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.bench_load import MAX_TOTAL_S, BenchPlan, BenchRunner, Sample
from modelport.control.deployment import Deployment
from modelport.core.errors import InvalidRequest
from modelport.store.planning_tables import BenchProfileRow

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_OPEN_LOOP",
    "MAX_CONCURRENCY",
    "MAX_RATE",
    "MAX_TOTAL_S",
    "BenchPlan",
    "BenchRunner",
    "Sample",
    "check_plan",
    "list_profiles",
    "machine_facts",
    "profile_public",
    "profiles_of_version",
    "run_public",
    "sample_request",
    "store_profile",
]

MAX_LEVELS = 8
MAX_CONCURRENCY = 64  # callers per replica at one level
MAX_RATE = 5_000.0  # requests per second per replica, open loop
DEFAULT_LEVELS = (1, 2, 4, 8)
# Where a plan puts each replica at peak: ceil(peak x 1.3 / capacity) replicas load each
# with 38% to 77% of its capacity once more than one is needed. Lower shares are not run: a
# replica that idles between requests wakes slower (here p95 fell as load rose up to ~half
# of capacity), and the planner, which never lets p95 fall as load grows, would carry that
# figure up the whole curve.
DEFAULT_OPEN_LOOP = (0.4, 0.55, 0.7)
MIN_DURATION_S = 0.5
# Levels share the total; what is left after the levels is the stragglers' grace.
_LOAD_SHARE_S = 50.0
_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again")


def check_plan(
    concurrency: Sequence[int] | None,
    duration_s: float,
    rate: float | None = None,
    open_loop: Sequence[float] | None = None,
) -> BenchPlan:
    """The levels in increasing order (default ``DEFAULT_LEVELS``) then open-loop runs at
    ``open_loop`` shares of the top throughput (default ``DEFAULT_OPEN_LOOP``); or one run
    at ``rate`` requests per second per replica. ``InvalidRequest`` naming the field at
    fault."""
    if rate is not None:
        if open_loop is not None:
            raise InvalidRequest(
                "open_loop: a run at one rate takes no open-loop shares",
                field="open_loop",
                param="open_loop",
            )
        return _check_rate(concurrency, duration_s, rate)
    shares = _check_shares(DEFAULT_OPEN_LOOP if open_loop is None else open_loop)
    if concurrency is None:
        concurrency = DEFAULT_LEVELS
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
    plan = BenchPlan(levels, duration_s, open_loop=shares)
    if duration_s * plan.runs > _LOAD_SHARE_S:
        raise InvalidRequest(
            f"duration: {plan.runs} run(s) ({len(levels)} level(s), {len(shares)} open-loop) "
            f"of {duration_s:g}s is {duration_s * plan.runs:g}s; a bench runs at most "
            f"{_LOAD_SHARE_S:g}s of load (shorten duration or give fewer levels)",
            field="duration",
            param="duration",
        )
    return plan


def _check_shares(shares: Sequence[float]) -> tuple[float, ...]:
    if len(shares) > MAX_LEVELS:
        raise InvalidRequest(
            f"open_loop: give at most {MAX_LEVELS} shares, got {len(shares)}",
            field="open_loop",
            param="open_loop",
        )
    for index, share in enumerate(shares):
        if isinstance(share, bool) or not math.isfinite(share) or not 0 < share <= 1:
            raise InvalidRequest(
                f"open_loop[{index}]: a share of the top throughput, above 0 and at most 1, "
                f"got {share}",
                field=f"open_loop[{index}]",
                param=f"open_loop[{index}]",
            )
    return tuple(sorted(set(shares)))


def _check_rate(concurrency: Sequence[int] | None, duration_s: float, rate: float) -> BenchPlan:
    if concurrency is not None:
        raise InvalidRequest(
            "rate: give either rate (an open-loop run at that rate) or concurrency levels "
            "(closed loop), not both",
            field="rate",
            param="rate",
        )
    if isinstance(rate, bool) or not math.isfinite(rate) or not 0 < rate <= MAX_RATE:
        raise InvalidRequest(
            f"rate: must be above 0 and at most {MAX_RATE:g} requests per second per replica, "
            f"got {rate}",
            field="rate",
            param="rate",
        )
    if not math.isfinite(duration_s) or not MIN_DURATION_S <= duration_s <= _LOAD_SHARE_S:
        raise InvalidRequest(
            f"duration: must be {MIN_DURATION_S:g}s to {_LOAD_SHARE_S:g}s, got {duration_s:g}s",
            field="duration",
            param="duration",
        )
    return BenchPlan((), duration_s, rate)


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


def run_public(
    deployment: Deployment,
    hardware: str,
    replicas: int,
    plan: BenchPlan,
    machine: Mapping[str, Any],
    points: list[dict[str, Any]],
    sample: Sample,
) -> dict[str, Any]:
    """A run that is not stored (one at a fixed rate), shaped as a stored profile is, with
    ``id`` and ``created_at`` null."""
    spec = deployment.spec
    return {
        "id": None,
        "endpoint": spec.endpoint,
        "revision": spec.revision,
        "model": f"{spec.model}:{spec.version}",
        "task": spec.task,
        "hardware": hardware,
        "replicas": replicas,
        "duration_s": plan.duration_s,
        "machine": dict(machine),
        "points": points,
        "sample": dict(sample.describe),
        "created_by": None,
        "created_at": None,
    }


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
