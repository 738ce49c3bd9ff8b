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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelport.core.routing import Upstream
from modelport.gateway.upstream import UpstreamPool

Headers = list[tuple[bytes, bytes]]


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def merge(self, other: Phase) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.seconds += other.seconds

    def summary(self) -> dict[str, float]:
        values = np.asarray(self.latencies_ms or [0.0])
        return {
            "requests": float(len(self.latencies_ms)),
            "errors": float(self.errors),
            "rps": len(self.latencies_ms) / self.seconds if self.seconds else 0.0,
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
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
            response = await pool.request(upstream, "POST", path, headers, body)
            if response.status == 200:
                phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                phase.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


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
