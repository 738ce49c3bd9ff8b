"""What the gateway adds: the same load straight to a worker and through the gateway.

Starts ``modelport serve --demo`` (only the ``breast-cancer`` demo) on a free loopback port
with a temporary home, plus a standalone worker for the same model version (identical code
and artifact), then drives both with the same keep-alive HTTP/1.1 client (the gateway's own
``UpstreamPool``, on uvloop when installed). Phases alternate (direct, gateway, direct, ...)
so that machine noise hits both alike; it prints requests/s, p50 and p99 for each and the
difference. Every process it starts is stopped at the end, on Ctrl-C and SIGTERM too.
Self-contained, so that both of these work:

    .venv/bin/python bench/gateway_overhead.py --seconds 5 --concurrency 1
    .venv/bin/python -m bench.gateway_overhead --seconds 5 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaLaunch, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.core.signature import Signature
from modelport.gateway.upstream import UpstreamPool

try:
    from bench._harness import Phase, drive
except ModuleNotFoundError:  # run as a script, bench/ itself is on the path
    from _harness import Phase, drive  # type: ignore[no-redef,import-not-found]

ENDPOINT = "breast-cancer"
PATH = f"/v2/models/{ENDPOINT}/infer"
BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
).encode()
WARMUP_S = 1.0
START_LIMIT_S = 180.0  # building the demo model and loading it, on a busy machine

Headers = list[tuple[bytes, bytes]]


# -- measurement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    upstream: Upstream
    headers: Headers


async def _drive(pool: UpstreamPool, target: Target, seconds: float, concurrency: int) -> Phase:
    """``concurrency`` closed-loop clients, each sending one request after another."""
    return await drive(pool, target.upstream, PATH, target.headers, BODY, seconds, concurrency)


async def _check_same_answer(pool: UpstreamPool, targets: list[Target]) -> None:
    """Both targets must accept the request and give the same outputs, or nothing compares."""
    answers = []
    for target in targets:
        response = await pool.request(target.upstream, "POST", PATH, target.headers, BODY)
        if response.status != 200:
            raise RuntimeError(f"{target.name} answered {response.status}: {response.body[:300]!r}")
        answers.append(json.loads(response.body)["outputs"])
    if any(answer != answers[0] for answer in answers):
        raise RuntimeError(f"the targets disagree: {answers}")


async def _measure(
    targets: list[Target], seconds: float, rounds: int, concurrency: int
) -> tuple[dict[str, Phase], list[dict[str, Phase]]]:
    pool = UpstreamPool()
    totals = {target.name: Phase() for target in targets}
    per_round: list[dict[str, Phase]] = []
    try:
        await _check_same_answer(pool, targets)
        for target in targets:  # open the connections, warm caches and both servers up
            await _drive(pool, target, WARMUP_S, concurrency)
        for _ in range(rounds):
            this_round = {}
            for target in targets:
                phase = await _drive(pool, target, seconds, concurrency)
                totals[target.name].merge(phase)
                this_round[target.name] = phase
            per_round.append(this_round)
    finally:
        await pool.close()
    return totals, per_round


def _run(main: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[Any, str]:
    """Run on uvloop when it is installed (as the server and the workers do)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main()), "asyncio"
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main()), "uvloop"


# -- processes ---------------------------------------------------------------------------------


class Processes:
    """Starts processes in their own sessions (a Ctrl-C is ours to handle) and stops them all."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        pass_fds: tuple[int, ...] = (),
        stdin: bytes | None = None,
    ) -> subprocess.Popen[bytes]:
        with self.log(name).open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=env,
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._running.append((name, process))
        if stdin is not None and process.stdin is not None:
            with process.stdin:  # a worker reads its launch from stdin, as the backend writes it
                process.stdin.write(stdin)
        return process

    def log(self, name: str) -> Path:
        return self._directory / f"{name}.log"

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log(name).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM in reverse start order (the server then drains its own replica), then kill."""
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while self._running:
            _, process = self._running.pop()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    ok: Callable[[httpx.Response], bool],
    process: subprocess.Popen[bytes],
    what: str,
) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            if ok(client.get(url, headers=headers, timeout=2.0)):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {START_LIMIT_S:.0f} s ({url})")


def _base_env() -> dict[str, str]:
    """This environment without stale ``MODELPORT_*`` settings (a database URL, say)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}


def _start_worker(
    processes: Processes,
    client: httpx.Client,
    home: Path,
    admin: dict[str, str],
    token: str,
) -> Upstream:
    """A standalone replica of the endpoint's model version, launched as the backend does."""
    response = client.get(f"/api/v1/models/{ENDPOINT}/versions/1", headers=admin)
    response.raise_for_status()
    version = response.json()
    digest: str = version["artifact_digest"]
    spec = ReplicaSpec(
        endpoint=ENDPOINT,
        model=ENDPOINT,
        version=1,
        runtime=version["runtime"],
        artifact_dir=home / "artifacts" / "sha256" / digest.removeprefix("sha256:"),
        artifact_digest=digest,
        signature=Signature.model_validate(version["signature"]),
        options=version["runtime_options"] or {},
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        sock.set_inheritable(True)
        launch = ReplicaLaunch(spec=spec, token=token, fd=sock.fileno(), log_level="warning")
        worker = processes.start(
            "worker",
            [sys.executable, "-m", "modelport.worker"],
            _base_env(),
            (sock.fileno(),),
            stdin=launch.model_dump_json().encode(),
        )
        port = int(sock.getsockname()[1])
    # Our copy of the listening socket is closed; the worker holds its own.
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    _wait_until(client, url, {}, lambda r: r.status_code == 200, worker, "worker")
    return Upstream("127.0.0.1", port)


def start_demo_server(
    processes: Processes, home: Path, name: str = "server", **settings: str
) -> tuple[subprocess.Popen[bytes], int]:
    """``modelport serve --demo`` with only the breast-cancer demo, on a free loopback port,
    with its state in ``home``; ``settings`` are extra ``MODELPORT_*`` variables (without the
    prefix, lower case). Returns the process and its port."""
    port = _free_port()
    env = {
        **_base_env(),
        "MODELPORT_HOME": str(home),
        "MODELPORT_PORT": str(port),
        "MODELPORT_HOST": "127.0.0.1",
        "MODELPORT_LOG_LEVEL": "warning",
        # The other demos (an LLM, embeddings, speech) would load and eat the CPU we measure.
        "MODELPORT_DEMO_MODELS": ENDPOINT,
        **{f"MODELPORT_{key.upper()}": value for key, value in settings.items()},
    }
    modelport = Path(sys.executable).with_name("modelport")
    argv = [str(modelport)] if modelport.exists() else [sys.executable, "-m", "modelport"]
    return processes.start(name, [*argv, "serve", "--demo"], env), port


def wait_demo_ready(
    client: httpx.Client, process: subprocess.Popen[bytes], home: Path, what: str = "server"
) -> dict[str, str]:
    """Wait until a ``start_demo_server`` server (``client`` points at it) serves the demo
    endpoint; its admin headers."""
    _wait_until(client, "/healthz", {}, lambda r: r.status_code == 200, process, what)
    admin = {"Authorization": f"Bearer {(home / 'admin-token').read_text().strip()}"}
    _wait_until(
        client,
        f"/api/v1/endpoints/{ENDPOINT}",
        admin,
        lambda r: r.status_code == 200 and r.json().get("status") == "ready",
        process,
        f"{what}: endpoint {ENDPOINT}",
    )
    return admin


def _setup_and_measure(tmp: Path, processes: Processes, args: argparse.Namespace) -> dict[str, Any]:
    home = tmp / "home"
    server, port = start_demo_server(processes, home)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        admin = wait_demo_ready(client, server, home)
        created = client.post(
            "/api/v1/keys", json={"project": "default", "name": "bench"}, headers=admin
        )
        created.raise_for_status()
        key: str = created.json()["key"]
        token = secrets.token_urlsafe(32)
        worker = _start_worker(processes, client, home, admin, token)

    content = (b"content-type", b"application/json")
    targets = [
        Target("direct", worker, [(WORKER_TOKEN_HEADER, token.encode()), content]),
        Target(
            "gateway",
            Upstream("127.0.0.1", port),
            [(b"authorization", f"Bearer {key}".encode()), content],
        ),
    ]
    (totals, per_round), loop = _run(
        lambda: _measure(targets, args.seconds, args.rounds, args.concurrency)
    )
    direct, gateway = totals["direct"].summary(), totals["gateway"].summary()
    return {
        "endpoint": ENDPOINT,
        "rows_per_request": 1,
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "rounds": args.rounds,
        "client_loop": loop,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "direct": direct,
        "gateway": gateway,
        "added_p50_ms": gateway["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": gateway["p99_ms"] - direct["p99_ms"],
        "throughput_ratio": gateway["rps"] / direct["rps"] if direct["rps"] else float("nan"),
        "rounds_detail": [
            {name: phase.summary() for name, phase in one.items()} for one in per_round
        ],
    }


# -- report ------------------------------------------------------------------------------------


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['endpoint']}, {report['rows_per_request']} row/request, "
        f"concurrency {report['concurrency']}, {report['rounds']} rounds x "
        f"{report['seconds_per_phase']:g} s per target, client on {report['client_loop']}, "
        f"{report['cpus']} CPUs"
    )
    print(
        f"{'target':<9}{'requests':>10}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}"
    )
    for name in ("direct", "gateway"):
        row = report[name]
        print(
            f"{name:<9}{row['requests']:>10}{row['errors']:>8}{row['rps']:>9.0f}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['max_ms']:>9.2f}"
        )
    for name in ("direct", "gateway"):
        rounds = [one[name] for one in report["rounds_detail"]]
        p50s = "/".join(f"{r['p50_ms']:.3f}" for r in rounds)
        rps = "/".join(f"{r['rps']:.0f}" for r in rounds)
        print(f"  {name} per round: p50 {p50s} ms, {rps} req/s")
    for name in ("direct", "gateway"):
        if report[name]["errors"]:
            print(f"  {name} errors: {report[name]['error_kinds']}")
    print(
        f"added p50: {report['added_p50_ms']:.3f} ms  "
        f"added p99: {report['added_p99_ms']:.3f} ms  "
        f"throughput ratio gateway/direct: {report['throughput_ratio']:.2f}"
    )


Measure = Callable[[Path, Processes, argparse.Namespace], dict[str, Any]]


def bench_args(description: str, rounds: int) -> argparse.Namespace:
    """The options every side-by-side benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=rounds, help="phases per side, alternating")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds, --rounds and --concurrency must be positive")
    return args


def measured(measure: Measure, args: argparse.Namespace, logs: tuple[str, ...]) -> dict[str, Any]:
    """``measure`` in a temporary directory; every process it started is stopped at the end,
    on Ctrl-C and SIGTERM too (``KeyboardInterrupt`` then reaches the caller); on a failure
    the tail of each of ``logs`` is shown."""
    # Ctrl-C and SIGTERM take the same way out, through the finally below (set explicitly:
    # a shell starts background jobs with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="modelport-bench-", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        processes = Processes(tmp)
        try:
            return measure(tmp, processes, args)
        except KeyboardInterrupt:
            print("interrupted; stopping what the benchmark started", file=sys.stderr)
            raise
        except Exception:
            for log in logs:
                print(f"--- {log} log (last lines) ---\n{processes.tail(log)}", file=sys.stderr)
            raise
        finally:
            processes.stop_all()


def main() -> int:
    args = bench_args("Requests/s and latency straight to a worker vs through the gateway.", 2)
    try:
        report = measured(_setup_and_measure, args, ("server", "worker"))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    errors = report["direct"]["errors"] + report["gateway"]["errors"]
    if errors:
        print(f"{errors} requests failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
