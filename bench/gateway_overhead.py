"""What the gateway adds: the same load straight to a worker and through the gateway.

Starts ``modelport serve --demo`` (breast-cancer only) on a free loopback port with a
temporary home, plus a standalone worker for the same model version (identical code and
artifact), then drives both with the same keep-alive HTTP/1.1 client, alternating phases so
that machine noise hits both alike. Prints requests/s, p50 and p99 for each and the
difference. Every process it starts is stopped at the end.

    .venv/bin/python -m bench.gateway_overhead --seconds 6 --concurrency 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from bench._harness import (
    BenchServer,
    Headers,
    Phase,
    drive,
    modelport_server,
    stop,
    table,
    wait_http,
)
from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.core.signature import Signature
from modelport.gateway.upstream import UpstreamPool

PATH = "/v2/models/breast-cancer/infer"
BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
).encode()


@contextmanager
def standalone_worker(server: BenchServer, token: str) -> Iterator[Upstream]:
    """A worker for breast-cancer:1 started the way the supervisor starts one."""
    version = httpx.get(
        f"{server.url}/api/v1/models/breast-cancer/versions/1", headers=server.admin
    ).json()
    digest = version["artifact_digest"]
    spec = ReplicaSpec(
        endpoint="breast-cancer",
        model="breast-cancer",
        version=1,
        runtime=version["runtime"],
        artifact_dir=server.home / "artifacts" / "sha256" / digest.removeprefix("sha256:"),
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
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", {}, lambda r: r.status_code == 200)
        yield Upstream("127.0.0.1", port)
    finally:
        stop(process)


async def measure(
    targets: dict[str, tuple[Upstream, Headers]], args: argparse.Namespace
) -> dict[str, Phase]:
    pool = UpstreamPool(timeout_s=30)
    results = {name: Phase() for name in targets}
    try:
        for upstream, headers in targets.values():  # warm up connections and caches
            await drive(pool, upstream, PATH, headers, BODY, 1.0, args.concurrency)
        for _ in range(args.rounds):
            for name, (upstream, headers) in targets.items():
                phase = await drive(
                    pool,
                    upstream,
                    PATH,
                    headers,
                    BODY,
                    args.seconds / args.rounds,
                    args.concurrency,
                )
                results[name].merge(phase)
    finally:
        await pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per target")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two targets")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    content = (b"content-type", b"application/json")
    token = secrets.token_urlsafe(16)
    with modelport_server("breast-cancer") as server, standalone_worker(server, token) as worker:
        targets = {
            "direct": (worker, [(WORKER_TOKEN_HEADER, token.encode()), content]),
            "gateway": (
                Upstream("127.0.0.1", server.port),
                [(b"authorization", f"Bearer {server.key}".encode()), content],
            ),
        }
        results = asyncio.run(measure(targets, args))
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
    print(table({"direct": direct, "gateway": gateway}))
    print(
        f"added p50: {report['added_p50_ms']:.3f} ms  added p99: {report['added_p99_ms']:.3f} ms  "
        f"throughput ratio gateway/direct: {report['throughput_ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
