"""Shared pieces of the benchmarks: a throwaway server, a low-overhead load generator, and
latency summaries. Everything listens on loopback and stops by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelport.core.routing import Upstream
from modelport.gateway.upstream import UpstreamError, UpstreamPool

Headers = list[tuple[bytes, bytes]]
REQUEST_TIMEOUT_S = 10.0  # a request that takes longer counts as an error


@dataclass
class Phase:
    """Successful latencies, failures by kind and wall time of one or more phases."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def merge(self, other: Phase) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.seconds += other.seconds

    def summary(self) -> dict[str, Any]:
        values = np.asarray(self.latencies_ms)
        has = values.size > 0
        return {
            "requests": int(values.size),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "rps": values.size / self.seconds if self.seconds else 0.0,
            "mean_ms": float(values.mean()) if has else float("nan"),
            "p50_ms": float(np.percentile(values, 50)) if has else float("nan"),
            "p99_ms": float(np.percentile(values, 99)) if has else float("nan"),
            # The worst single request: where an event-loop stall (a full garbage
            # collection, blocking I/O) shows, while the percentiles hide it.
            "max_ms": float(values.max()) if has else float("nan"),
        }


@dataclass
class BenchServer:
    url: str
    port: int
    home: Path
    admin: dict[str, str]
    key: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, headers: dict[str, str], ok: Any, limit_s: float = 180.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if ok(httpx.get(url, headers=headers, timeout=2)):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {limit_s:.0f}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def modelport_server(demos: str) -> Iterator[BenchServer]:
    """``modelport serve --demo`` with only ``demos``, a temporary home and an API key."""
    with tempfile.TemporaryDirectory(prefix="modelport-bench-") as tmp:
        home = Path(tmp) / "home"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MODELPORT_HOME": str(home),
            "MODELPORT_PORT": str(port),
            "MODELPORT_HOST": "127.0.0.1",
            "MODELPORT_LOG_LEVEL": "warning",
            "MODELPORT_DEMO_MODELS": demos,
            # Benchmarks register models they build in temporary directories by path.
            "MODELPORT_ARTIFACT_ROOTS": tempfile.gettempdir(),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", "--demo"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"{url}/healthz", {}, lambda r: r.status_code == 200)
            admin = {"Authorization": f"Bearer {(home / 'admin-token').read_text().strip()}"}
            for name in demos.split(","):
                wait_ready(url, admin, name)
            key = httpx.post(
                f"{url}/api/v1/keys", json={"project": "default", "name": "bench"}, headers=admin
            ).json()["key"]
            yield BenchServer(url, port, home, admin, key)
        finally:
            stop(process)


def wait_ready(url: str, admin: dict[str, str], endpoint: str) -> None:
    wait_http(
        f"{url}/api/v1/endpoints/{endpoint}",
        admin,
        lambda r: r.status_code == 200 and r.json()["status"] == "ready",
    )


async def drive(
    pool: UpstreamPool,
    upstream: Upstream,
    path: str,
    headers: Headers,
    body: bytes,
    seconds: float,
    concurrency: int,
) -> Phase:
    """``concurrency`` clients in a closed loop for ``seconds``; only 200s count as done."""
    phase = Phase()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    response = await pool.request(upstream, "POST", path, headers, body)
            except (UpstreamError, TimeoutError) as exc:  # counted, not fatal: the run goes on
                phase.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)  # a dead target must not spin the CPU
                continue
            if response.status == 200:
                phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                phase.errors[f"HTTP {response.status}"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


Switch = Callable[[], None]


async def alternate(
    targets: dict[str, tuple[Upstream, Headers]],
    path: str,
    body: bytes,
    *,
    seconds: float,
    rounds: int,
    concurrency: int,
    warmup_s: float = 1.0,
    switch: dict[str, Switch] | None = None,
) -> tuple[dict[str, Phase], list[dict[str, Phase]], dict[str, int]]:
    """Load each target in turn, round after round, so machine noise hits all alike.

    ``switch[name]()`` runs before each of a target's phases, outside the measurement (to
    turn a feature on or off on a shared server). Returns the totals per target, each
    round's phases, and how many requests each target answered (warm-up included)."""
    pool = UpstreamPool()
    totals = {name: Phase() for name in targets}
    per_round: list[dict[str, Phase]] = []
    answered = dict.fromkeys(targets, 0)

    async def phase_of(name: str, length_s: float) -> Phase:
        if switch is not None:
            switch[name]()
        upstream, headers = targets[name]
        phase = await drive(pool, upstream, path, headers, body, length_s, concurrency)
        answered[name] += len(phase.latencies_ms) + sum(phase.errors.values())
        return phase

    try:
        for name in targets:
            await phase_of(name, warmup_s)
        for _ in range(rounds):
            this_round = {}
            for name in targets:
                phase = this_round[name] = await phase_of(name, seconds)
                totals[name].merge(phase)
            per_round.append(this_round)
    finally:
        await pool.close()
    return totals, per_round, answered


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'target':<12}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
    ]
    for name, row in rows.items():
        lines.append(
            f"{name:<12}{row['requests']:>10.0f}{row['errors']:>8.0f}{row['rps']:>10.0f}"
            f"{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}"
        )
    return "\n".join(lines)


#: What a feature may cost the gateway (issues 9 and 10): on/off throughput, added p50.
TARGET_RATIO = 0.90
TARGET_ADDED_P50_MS = 0.3


def print_on_off(report: dict[str, Any], title: str, label: str = "side") -> None:
    """The side-by-side table of an on/off benchmark: each side's totals and rounds, then the
    throughput ratio and the added latency against the targets."""
    print(title)
    width = max(6, len(label) + 1)
    print(f"{label:<{width}}{'requests':>10}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for mode in ("off", "on"):
        row = report[mode]
        print(
            f"{mode:<{width}}{row['requests']:>10}{row['errors']:>8}{row['rps']:>9.0f}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
        )
    for mode in ("off", "on"):
        rounds = [one[mode] for one in report["rounds_detail"]]
        p50s = "/".join(f"{r['p50_ms']:.3f}" for r in rounds)
        rps = "/".join(f"{r['rps']:.0f}" for r in rounds)
        print(f"  {mode} per round: p50 {p50s} ms, {rps} req/s")
    ratio, added = report["throughput_ratio"], report["added_p50_ms"]
    print(
        f"throughput on/off: {ratio:.3f} (target >= {TARGET_RATIO:.2f}: "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'})  added p50: {added:.3f} ms (target < "
        f"{TARGET_ADDED_P50_MS} ms: {'met' if added < TARGET_ADDED_P50_MS else 'MISSED'})  "
        f"added p99: {report['added_p99_ms']:.3f} ms"
    )
