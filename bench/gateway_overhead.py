"""What the gateway adds: the same load straight to a worker and through the gateway.

Starts ``modelport serve --demo`` on a free loopback port with a temporary home, plus a
standalone worker for the same model version (identical code and artifact), then drives both
with the same keep-alive HTTP/1.1 client, alternating phases so that machine noise hits both
alike. Prints requests/s, p50 and p99 for each and the difference.

    .venv/bin/python bench/gateway_overhead.py --seconds 5 --concurrency 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.core.signature import Signature
from modelport.gateway.upstream import UpstreamPool

BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
).encode()
PATH = "/v2/models/breast-cancer/infer"


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
        values = np.asarray(self.latencies_ms)
        return {
            "requests": float(len(values)),
            "errors": float(self.errors),
            "rps": len(values) / self.seconds if self.seconds else 0.0,
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, headers: dict[str, str], check: Any, limit_s: float = 120.0) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, headers=headers, timeout=2)
            if check(response):
                return response.json() if response.content else None
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {limit_s}s")


async def _drive(
    pool: UpstreamPool,
    upstream: Upstream,
    headers: list[tuple[bytes, bytes]],
    seconds: float,
    concurrency: int,
) -> Phase:
    phase = Phase()
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await pool.request(upstream, "POST", PATH, headers, BODY)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status == 200:
                phase.latencies_ms.append(elapsed)
            else:
                phase.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


async def _measure(
    direct: tuple[Upstream, list[tuple[bytes, bytes]]],
    gateway: tuple[Upstream, list[tuple[bytes, bytes]]],
    seconds: float,
    rounds: int,
    concurrency: int,
) -> dict[str, Phase]:
    pool = UpstreamPool(timeout_s=30)
    results = {"direct": Phase(), "gateway": Phase()}
    targets = {"direct": direct, "gateway": gateway}
    try:
        for upstream, headers in targets.values():  # warm up connections and caches
            await _drive(pool, upstream, headers, 1.0, concurrency)
        for _ in range(rounds):
            for name, (upstream, headers) in targets.items():
                results[name].merge(
                    await _drive(pool, upstream, headers, seconds / rounds, concurrency)
                )
    finally:
        await pool.close()
    return results


def _start_worker(
    home: Path, server_url: str, admin: dict[str, str], token: str
) -> tuple[subprocess.Popen[bytes], Upstream]:
    version = httpx.get(
        f"{server_url}/api/v1/models/breast-cancer/versions/1", headers=admin
    ).json()
    digest = version["artifact_digest"]
    spec = ReplicaSpec(
        endpoint="breast-cancer",
        model="breast-cancer",
        version=1,
        runtime=version["runtime"],
        artifact_dir=home / "artifacts" / "sha256" / digest.removeprefix("sha256:"),
        artifact_digest=digest,
        signature=Signature.model_validate(version["signature"]),
        options=version["runtime_options"],
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    env = {
        **os.environ,
        "MODELPORT_WORKER_SPEC": spec.model_dump_json(),
        "MODELPORT_WORKER_TOKEN": token,
        "MODELPORT_WORKER_FD": str(sock.fileno()),
        "MODELPORT_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.worker"],
        env=env,
        pass_fds=(sock.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = sock.getsockname()[1]
    sock.close()  # the worker holds its own copy
    _wait_http(f"http://127.0.0.1:{port}/v2/health/ready", {}, lambda r: r.status_code == 200)
    return process, Upstream("127.0.0.1", port)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per target")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two targets")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()

    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="modelport-bench-") as tmp:
        home = Path(tmp) / "home"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MODELPORT_HOME": str(home),
            "MODELPORT_PORT": str(port),
            "MODELPORT_HOST": "127.0.0.1",
            "MODELPORT_LOG_LEVEL": "warning",
        }
        try:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "modelport", "serve", "--demo"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_http(f"{url}/healthz", {}, lambda r: r.status_code == 200)
            admin = {"Authorization": f"Bearer {(home / 'admin-token').read_text().strip()}"}
            _wait_http(
                f"{url}/api/v1/endpoints/breast-cancer",
                admin,
                lambda r: r.status_code == 200 and r.json()["status"] == "ready",
            )
            key = httpx.post(
                f"{url}/api/v1/keys", json={"project": "default", "name": "bench"}, headers=admin
            ).json()["key"]
            token = secrets.token_urlsafe(16)
            worker, worker_upstream = _start_worker(home, url, admin, token)
            processes.append(worker)

            content = [(b"content-type", b"application/json")]
            results = asyncio.run(
                _measure(
                    (worker_upstream, [(WORKER_TOKEN_HEADER, token.encode()), *content]),
                    (
                        Upstream("127.0.0.1", port),
                        [(b"authorization", f"Bearer {key}".encode()), *content],
                    ),
                    args.seconds,
                    args.rounds,
                    args.concurrency,
                )
            )
        finally:
            for process in reversed(processes):
                _stop(process)

    direct, gateway = results["direct"].summary(), results["gateway"].summary()
    report = {
        "concurrency": args.concurrency,
        "direct": direct,
        "gateway": gateway,
        "added_p50_ms": gateway["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": gateway["p99_ms"] - direct["p99_ms"],
        "throughput_ratio": gateway["rps"] / direct["rps"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"concurrency {args.concurrency}, {args.seconds:.0f} s per target in {args.rounds} rounds"
    )
    print(f"{'target':<10}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in (("direct", direct), ("gateway", gateway)):
        print(
            f"{name:<10}{row['requests']:>10.0f}{row['errors']:>8.0f}{row['rps']:>10.0f}"
            f"{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}"
        )
    print(
        f"added p50: {report['added_p50_ms']:.3f} ms  added p99: {report['added_p99_ms']:.3f} ms  "
        f"throughput ratio gateway/direct: {report['throughput_ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
