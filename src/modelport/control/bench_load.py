"""Driving a bench's load: closed-loop levels (each caller sends its next request when the
answer arrives) and open-loop runs at fixed rates, straight at a revision's replicas, with
the secret the gateway sends them.

The load runs in a short-lived process of its own (``python -m
modelport.control.bench_load``, its spec on stdin, the points on stdout): in the server's
process it would share the interpreter lock with the gateway and pause in the server's
garbage collections (a big heap, so long ones), which an open-loop run measures as the
replica's latency. The whole run is bounded by ``MAX_TOTAL_S``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from modelport.core.errors import Conflict, ModelportError
from modelport.core.replica import WORKER_TOKEN_HEADER
from modelport.core.routing import Upstream

__all__ = ["MAX_TOTAL_S", "BenchPlan", "BenchRunner", "Sample", "drive", "drive_in_process"]

MAX_TOTAL_S = 60.0  # the whole run, stragglers included
_WARMUP_S = 0.5
_WARMUP_CALLS = 20
_CALL_TIMEOUT_S = 10.0
# An open-loop run stops sending to a replica with this many calls unanswered: it is
# overloaded, and more calls would only measure the queue (each counts as an error).
_MAX_OUTSTANDING = 256
_WINDOWS = 3  # an open-loop run's p95 is the median of its thirds
# Connections per replica an open-loop run may hold; calls beyond wait for one, timed (the
# wait is queueing, wherever it happens). Without a cap a stall makes the client open a
# connection per waiting call, and on a small machine that work alone keeps it overloaded.
_OPEN_LOOP_CONNECTIONS = 16
_SPAWN_GRACE_S = 15.0  # starting the load process and reading its answer, past MAX_TOTAL_S


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """What to measure: the concurrency levels (callers per replica) and seconds at each; or,
    with ``rate``, one open-loop run: requests sent to each replica at that fixed rate
    whatever the answers take (how a plan's predicted p95 is checked)."""

    concurrency: tuple[int, ...]
    duration_s: float
    rate: float | None = None
    open_loop: tuple[float, ...] = ()
    """After the levels: open-loop runs at these shares of the most throughput a level
    reached. Real traffic arrives open loop, and on a busy or a mostly idle machine its p95
    differs from a closed loop's at the same throughput (a closed loop waits out a stall
    with one call; an idle replica wakes slower), so the planner reads these points below
    saturation."""

    @property
    def runs(self) -> int:
        """How many timed runs of ``duration_s`` the plan makes."""
        return 1 if self.rate is not None else len(self.concurrency) + len(self.open_loop)


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


async def _paced(
    client: httpx.AsyncClient,
    targets: Sequence[Upstream],
    sample: Sample,
    headers: Mapping[str, str],
    rate: float,
    duration_s: float,
    hard_deadline: float,
) -> dict[str, Any]:
    """Open loop: each replica gets a call every ``1 / rate`` seconds, evenly spaced, sent
    whether or not the earlier ones were answered."""
    level = _Level()
    outstanding = dict.fromkeys(targets, 0)
    windows: list[list[float]] = [[] for _ in range(_WINDOWS)]

    async def one(target: Upstream, window: list[float]) -> None:
        outstanding[target] += 1
        try:
            elapsed_ms, error = await _call(client, target, sample, headers)
        finally:
            outstanding[target] -= 1
        if error is None:
            level.latencies_ms.append(elapsed_ms)
            window.append(elapsed_ms)
        else:
            level.errors += 1
            level.last_error = error

    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    calls = max(1, int(rate * duration_s))
    for index in range(calls):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        window = windows[index * _WINDOWS // calls]
        for target in targets:
            if outstanding[target] >= _MAX_OUTSTANDING:
                level.errors += 1
                level.last_error = f"more than {_MAX_OUTSTANDING} calls unanswered: overloaded"
                continue
            tasks.append(asyncio.create_task(one(target, window)))
    until = started + duration_s
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, hard_deadline - time.monotonic()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        level.errors += len(pending)
        level.last_error = f"{len(pending)} call(s) still running when the bench ran out of time"
    point = _point(0, level, max(time.monotonic(), until) - started, len(targets))
    # concurrency 0: open loop. Its rps is the load offered (what the p95 was measured at);
    # what was answered within the run, stragglers included, is completed_rps.
    point.update(concurrency=0, rate=rate, rps=rate, completed_rps=point["rps"])
    # Its p95 is the median of the p95s of the run's thirds (by when calls were sent): one
    # stall from a neighbour on a shared machine moves one third, not the figure; a slow
    # replica is slow in every third. The whole run's is kept as run_p95_ms.
    parts = [sorted(window) for window in windows if window]
    if len(parts) == _WINDOWS:
        point["run_p95_ms"] = point["p95_ms"]
        point["p95_ms"] = round(statistics.median(_percentile(p, 0.95) for p in parts), 3)
    return point


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
    most = max((*plan.concurrency, _OPEN_LOOP_CONNECTIONS)) * len(targets)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    timeout = httpx.Timeout(_CALL_TIMEOUT_S)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        # Warm up each replica (connections, lazy first-call work); not measured.
        warm_until = time.monotonic() + _WARMUP_S
        await asyncio.gather(
            *(_caller(client, t, sample, headers, warm_until, None, _WARMUP_CALLS) for t in targets)
        )
        if plan.rate is not None:
            hard = min(deadline, time.monotonic() + plan.duration_s + _CALL_TIMEOUT_S)
            return [
                await _paced(client, targets, sample, headers, plan.rate, plan.duration_s, hard)
            ]
        points: list[dict[str, Any]] = []

        def hard_deadline() -> float:
            # Each run's stragglers get what the runs after it leave of the total.
            later = plan.duration_s * (plan.runs - len(points) - 1)
            return min(deadline - later, time.monotonic() + plan.duration_s + _CALL_TIMEOUT_S)

        for concurrency in plan.concurrency:
            points.append(
                await _level(
                    client, targets, sample, headers, concurrency, plan.duration_s, hard_deadline()
                )
            )
        top = max((float(point["rps"]) for point in points), default=0.0)
        for share in plan.open_loop if top > 0 else ():
            rate = round(share * top, 3)
            points.append(
                await _paced(
                    client, targets, sample, headers, rate, plan.duration_s, hard_deadline()
                )
            )
        return points


def drive(
    targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan
) -> list[dict[str, Any]]:
    """Run the load and return one point per run (per replica). Blocks for at most
    ``MAX_TOTAL_S`` and runs an event loop of its own: the load process's body."""
    return asyncio.run(_run(targets, token, sample, plan))


def _spec(targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan) -> bytes:
    return orjson.dumps(
        {
            "targets": [[t.host, t.port, t.tls] for t in targets],
            "token": base64.b64encode(token).decode(),
            "sample": {
                "path": sample.path,
                "body": base64.b64encode(sample.body).decode(),
                "content_type": sample.content_type,
                "describe": dict(sample.describe),
            },
            "plan": {
                "concurrency": list(plan.concurrency),
                "duration_s": plan.duration_s,
                "rate": plan.rate,
                "open_loop": list(plan.open_loop),
            },
        }
    )


async def drive_in_process(
    targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan
) -> list[dict[str, Any]]:
    """``drive`` in a process of its own (the token goes on its stdin, never its argv);
    killed if it outlives ``MAX_TOTAL_S`` and a grace, or if the caller is cancelled."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelport.control.bench_load",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C to the server's group is the server's to handle
    )
    try:
        out, errors = await asyncio.wait_for(
            process.communicate(_spec(targets, token, sample, plan)),
            MAX_TOTAL_S + _SPAWN_GRACE_S,
        )
    except BaseException:  # a timeout, or the request cancelled: the load stops with it
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        tail = errors.decode(errors="replace").strip().splitlines()[-3:]
        raise ModelportError(
            f"the bench's load process failed (exit {process.returncode}): {' | '.join(tail)}"
        )
    points: list[dict[str, Any]] = orjson.loads(out)
    return points


def main() -> None:
    """The load process: a spec on stdin, the points as JSON on stdout."""
    spec = orjson.loads(sys.stdin.buffer.read())
    raw = spec["sample"]
    sample = Sample(
        raw["path"], base64.b64decode(raw["body"]), raw["content_type"], raw["describe"]
    )
    given = spec["plan"]
    plan = BenchPlan(
        tuple(given["concurrency"]),
        given["duration_s"],
        given["rate"],
        tuple(given["open_loop"]),
    )
    targets = [Upstream(host, port, tls) for host, port, tls in spec["targets"]]
    points = drive(targets, base64.b64decode(spec["token"]), sample, plan)
    sys.stdout.buffer.write(orjson.dumps(points))


class BenchRunner:
    """Runs one bench at a time per server: two at once would each measure the other."""

    def __init__(self) -> None:
        self._busy = asyncio.Lock()

    async def run(
        self, targets: Sequence[Upstream], token: bytes, sample: Sample, plan: BenchPlan
    ) -> list[dict[str, Any]]:
        """``drive_in_process``; ``Conflict`` while another bench runs."""
        if self._busy.locked():
            raise Conflict("another bench is running on this server: try again when it ends")
        async with self._busy:
            return await drive_in_process(targets, token, sample, plan)


if __name__ == "__main__":
    main()
