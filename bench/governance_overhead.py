"""What governance costs the data plane: the same load with limits and budgets on and off.

Starts one ``modelport serve --demo`` (only the ``breast-cancer`` demo) on a free loopback
port with a temporary home, and alternates phases (off, on, off, on, ...) on that one
server, so both sides share the process, its replica and the machine's noise:

- off: no limit and no budget is set, so the gateway has no admission at all; the call
  carries a plain API key (authentication always runs: the data plane needs a key).
- on: a key scoped to the endpoint (scope check), requests-per-minute, tokens-per-minute
  and concurrency limits on the key, the project and the endpoint, and daily and monthly
  budgets on the project and the key (with a price on the endpoint, so each call reserves
  and settles a real cost); every limit and cap is far above what the run uses, so
  nothing is refused and both sides do the same work upstream.

Limits and budgets are set and removed through the API between phases (the gateway gets a
new snapshot each time, as in production). It prints requests/s, p50 and p99 of each side,
the throughput ratio and the added p50, and checks that no request was refused. Bounded in
time; every process it starts is stopped at the end, on Ctrl-C and SIGTERM too.

    .venv/bin/python bench/governance_overhead.py --seconds 5 --rounds 3 --concurrency 1

Targets (issue 10): at least 90% of the throughput, under 0.3 ms added at p50.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from modelport.core.routing import Upstream

try:
    from bench._harness import alternate, print_on_off
    from bench.gateway_overhead import (
        BODY,
        ENDPOINT,
        PATH,
        Processes,
        _run,
        bench_args,
        measured,
        start_demo_server,
        wait_demo_ready,
    )
except ModuleNotFoundError:  # run as a script, bench/ itself is on the path
    from _harness import alternate, print_on_off  # type: ignore[no-redef,import-not-found]
    from gateway_overhead import (  # type: ignore[no-redef,import-not-found]
        BODY,
        ENDPOINT,
        PATH,
        Processes,
        _run,
        bench_args,
        measured,
        start_demo_server,
        wait_demo_ready,
    )

WARMUP_S = 1.0
MODES = ("off", "on")  # off first in each round, as the reference
HIGH = 1_000_000_000  # a limit nothing in the run comes near


class Governance:
    """Turns the server's limits and budgets on and off through its API."""

    def __init__(self, client: httpx.Client, admin: dict[str, str], key_id: str) -> None:
        self._client = client
        self._admin = admin
        self._limits = [("key", key_id), ("project", "default"), ("endpoint", ENDPOINT)]
        self._budgets = [("project", "default"), ("key", key_id)]
        self.enabled = False

    def _call(self, method: str, path: str, body: Any = None) -> None:
        response = self._client.request(method, path, json=body, headers=self._admin)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")

    def on(self) -> None:
        if self.enabled:
            return
        self.enabled = True
        for kind, name in self._limits:
            limit = {"rpm": HIGH, "tpm": HIGH, "concurrency": 10_000}
            self._call("PUT", f"/api/v1/limits/{kind}/{name}", limit)
        for kind, name in self._budgets:
            caps = {"daily_usd": "1000000", "monthly_usd": "10000000"}
            self._call("PUT", f"/api/v1/budgets/{kind}/{name}", caps)

    def off(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        for kind, name in self._limits:
            self._call("DELETE", f"/api/v1/limits/{kind}/{name}")
        for kind, name in self._budgets:
            self._call("DELETE", f"/api/v1/budgets/{kind}/{name}")


def _start(processes: Processes, tmp: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    home = tmp / "home"
    server, port = start_demo_server(processes, home)
    return server, home, port


def _key(client: httpx.Client, admin: dict[str, str], name: str, **extra: Any) -> dict[str, Any]:
    created = client.post(
        "/api/v1/keys", json={"project": "default", "name": name, **extra}, headers=admin
    )
    created.raise_for_status()
    answer: dict[str, Any] = created.json()
    return answer


def _setup_and_measure(tmp: Path, processes: Processes, args: argparse.Namespace) -> dict[str, Any]:
    server, home, port = _start(processes, tmp)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        admin = wait_demo_ready(client, server, home)
        plain = _key(client, admin, "bench-off")
        scoped = _key(client, admin, "bench-on", scopes=[ENDPOINT])
        prices = {"endpoint": ENDPOINT, "prices": {"per_1k_requests": "0.01"}}
        client.post("/api/v1/prices", json=prices, headers=admin).raise_for_status()
        governance = Governance(client, admin, scoped["id"])
        content = (b"content-type", b"application/json")
        upstream = Upstream("127.0.0.1", port)
        targets = {
            mode: (upstream, [(b"authorization", f"Bearer {key['key']}".encode()), content])
            for mode, key in (("off", plain), ("on", scoped))
        }
        switch = {"off": governance.off, "on": governance.on}
        governance.on()  # fail before measuring if the API refuses a setting
        governance.off()
        (totals, per_round, _), loop = _run(
            lambda: alternate(
                targets,
                PATH,
                BODY,
                seconds=args.seconds,
                rounds=args.rounds,
                concurrency=args.concurrency,
                warmup_s=WARMUP_S,
                switch=switch,
            )
        )
        governance.off()
        # The "on" side must really have been limited: its key's answers carry the headers.
        governance.on()
        probe = client.post(
            PATH,
            content=BODY,
            headers={
                "authorization": f"Bearer {scoped['key']}",
                "content-type": "application/json",
            },
        )
        limited = probe.status_code == 200 and "x-ratelimit-limit-requests" in probe.headers
        governance.off()
    off, on = totals["off"].summary(), totals["on"].summary()
    return {
        "endpoint": ENDPOINT,
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "rounds": args.rounds,
        "client_loop": loop,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "off": off,
        "on": on,
        "on_was_limited": limited,
        "throughput_ratio": on["rps"] / off["rps"] if off["rps"] else float("nan"),
        "added_p50_ms": on["p50_ms"] - off["p50_ms"],
        "added_p99_ms": on["p99_ms"] - off["p99_ms"],
        "rounds_detail": [
            {mode: phase.summary() for mode, phase in one.items()} for one in per_round
        ],
    }


def _print_table(report: dict[str, Any]) -> None:
    print_on_off(
        report,
        f"{report['endpoint']} through the gateway, governance off vs on (scoped key, limits "
        f"on 3 scopes, budgets on 2), concurrency {report['concurrency']}, {report['rounds']} "
        f"rounds x {report['seconds_per_phase']:g} s per side, client on {report['client_loop']}, "
        f"{report['cpus']} CPUs",
        "side",
    )


def main() -> int:
    args = bench_args("Requests/s and latency with limits and budgets on and off.", 3)
    try:
        report = measured(_setup_and_measure, args, ("server",))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    errors = report["off"]["errors"] + report["on"]["errors"]
    if errors:
        print(f"{errors} requests failed or were refused", file=sys.stderr)
    if not report["on_was_limited"]:
        print("the 'on' side carried no rate-limit headers: nothing was measured", file=sys.stderr)
    return 1 if errors or not report["on_was_limited"] else 0


if __name__ == "__main__":
    sys.exit(main())
