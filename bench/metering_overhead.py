"""What metering costs: the same load through a gateway that meters and one that does not.

Starts two ``modelport serve --demo`` servers (only the ``breast-cancer`` demo), each on a
free loopback port with a temporary home: one as configured by default (every request
journaled before its answer, metrics fed from the journal, drift sampling at its default
rate) and one with ``MODELPORT_METERING=false`` (the recent-usage ring only: no journal, no
metrics, no sampling). Phases alternate (off, on, off, on, ...) with the same keep-alive
client (``bench._harness.drive``) so machine noise hits both alike; it prints requests/s,
p50 and p99 of each, the throughput ratio and the added p50, and checks that the metering
server counted every request in ``/metrics`` and the other none. Bounded in time; every
process it starts is stopped at the end, on Ctrl-C and SIGTERM too.

    .venv/bin/python bench/metering_overhead.py --seconds 5 --rounds 3 --concurrency 1

Targets (issue 9): at least 90% of the throughput, under 0.3 ms added at p50.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

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


def _start(processes: Processes, tmp: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    home = tmp / f"home-{mode}"
    metering = "true" if mode == "on" else "false"
    server, port = start_demo_server(processes, home, f"server-{mode}", metering=metering)
    return server, home, port


def _ready(
    process: subprocess.Popen[bytes], home: Path, port: int, mode: str
) -> tuple[str, dict[str, str]]:
    """Wait until the server serves the endpoint; an API key and the admin headers."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        admin = wait_demo_ready(client, process, home, mode)
        created = client.post(
            "/api/v1/keys", json={"project": "default", "name": "bench"}, headers=admin
        )
        created.raise_for_status()
        return str(created.json()["key"]), admin


def _metered(port: int, admin: dict[str, str]) -> float:
    """The requests the server's ``/metrics`` counted."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=admin, trust_env=False)
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "modelport_requests_total"
    )


def _stored(
    port: int, admin: dict[str, str], expected: int, wait_s: float = 30.0
) -> tuple[int, float]:
    """The requests the usage database holds once the loader caught up with ``expected``
    (or after ``wait_s``), and how long that took after the load ended."""
    started = time.monotonic()
    stored = 0
    while True:
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/usage",
            params={"by": "endpoint", "since": "1h"},
            headers=admin,
            trust_env=False,
        )
        response.raise_for_status()
        stored = int(response.json()["total"]["requests"])
        waited = time.monotonic() - started
        if stored >= expected or waited >= wait_s:
            return stored, waited
        time.sleep(0.2)


def _setup_and_measure(tmp: Path, processes: Processes, args: argparse.Namespace) -> dict[str, Any]:
    # Both start at once (each builds and loads the demo model), then take turns under load.
    started = {mode: _start(processes, tmp, mode) for mode in MODES}
    ready = {mode: _ready(*started[mode], mode) for mode in MODES}
    content = (b"content-type", b"application/json")
    targets = {
        mode: (
            Upstream("127.0.0.1", started[mode][2]),
            [(b"authorization", f"Bearer {ready[mode][0]}".encode()), content],
        )
        for mode in MODES
    }
    (totals, per_round, sent), loop = _run(
        lambda: alternate(
            targets,
            PATH,
            BODY,
            seconds=args.seconds,
            rounds=args.rounds,
            concurrency=args.concurrency,
            warmup_s=WARMUP_S,
        )
    )
    # The journal hands records to metrics a few times a second: let the last batch land.
    metered = {}
    for mode in MODES:
        port, admin = started[mode][2], ready[mode][1]
        metered[mode] = _metered(port, admin)
        if mode == "on" and metered[mode] < sent[mode]:
            time.sleep(1.0)
            metered[mode] = _metered(port, admin)
    # The loader runs in its own process at a lower priority: under load it may lag; it must
    # catch up once the load ends, every answered request stored.
    stored, lag_s = _stored(started["on"][2], ready["on"][1], sent["on"])
    off, on = totals["off"].summary(), totals["on"].summary()
    return {
        "stored": stored,
        "stored_after_s": lag_s,
        "endpoint": ENDPOINT,
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "rounds": args.rounds,
        "client_loop": loop,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "off": off,
        "on": on,
        "throughput_ratio": on["rps"] / off["rps"] if off["rps"] else float("nan"),
        "added_p50_ms": on["p50_ms"] - off["p50_ms"],
        "added_p99_ms": on["p99_ms"] - off["p99_ms"],
        "sent": sent,
        "metered": metered,
        "rounds_detail": [
            {mode: phase.summary() for mode, phase in one.items()} for one in per_round
        ],
    }


def _print_table(report: dict[str, Any]) -> None:
    print_on_off(
        report,
        f"{report['endpoint']} through the gateway, metering off vs on, concurrency "
        f"{report['concurrency']}, {report['rounds']} rounds x {report['seconds_per_phase']:g} s "
        f"per mode, client on {report['client_loop']}, {report['cpus']} CPUs",
        "metering",
    )
    print(
        f"requests in /metrics: on {report['metered']['on']:.0f} of {report['sent']['on']} sent, "
        f"off {report['metered']['off']:.0f} of {report['sent']['off']}"
    )
    print(
        f"requests in the usage database: {report['stored']} of {report['sent']['on']}, "
        f"{report['stored_after_s']:.1f} s after the load ended"
    )


def main() -> int:
    args = bench_args("Requests/s and latency through the gateway with metering on and off.", 3)
    try:
        report = measured(_setup_and_measure, args, tuple(f"server-{mode}" for mode in MODES))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    errors = report["off"]["errors"] + report["on"]["errors"]
    if errors:
        print(f"{errors} requests failed", file=sys.stderr)
    # Metering that silently counted nothing would make "on" look free.
    miscounted = (
        report["metered"]["on"] != report["sent"]["on"]
        or report["metered"]["off"]
        or report["stored"] != report["sent"]["on"]
    )
    if miscounted:
        print(
            f"miscounted: /metrics {report['metered']}, database {report['stored']}, "
            f"sent {report['sent']}",
            file=sys.stderr,
        )
    return 1 if errors or miscounted else 0


if __name__ == "__main__":
    sys.exit(main())
