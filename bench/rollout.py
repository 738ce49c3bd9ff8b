"""Requests failed during each rollout transition (must be 0), and how fast a rollback lands.

Starts ``modelport serve --demo`` (breast-cancer only), registers the demo model again as new
versions, and keeps ``--concurrency`` clients calling the endpoint through the gateway while
it goes through: a canary to promotion, a blue-green switch, a manual promote and a manual
rollback. Every response's status and ``x-modelport-revision`` are recorded. For the rollback
it prints the time from the ``rollback`` call returning to the first moment from which every
response came from the old revision.

    .venv/bin/python -m bench.rollout --concurrency 8
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._harness import BenchServer, modelport_server

BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}


def intent(version: int, rollout: str) -> str:
    return (
        f"endpoint: breast-cancer\ntask: tabular\nmodel: breast-cancer:{version}\n"
        f"slo:\n  max_error_rate: 0.01\nrollout:\n{rollout}"
    )


CANARY = "  strategy: canary\n  steps: [10, 50, 100]\n  interval: 2s\n  min_requests: 20\n"
BLUE_GREEN = "  strategy: blue-green\n  interval: 2s\n  min_requests: 20\n  keep_previous: 5s\n"
HELD = "  strategy: canary\n  steps: [50, 100]\n  interval: 10m\n  min_requests: 20\n"


@dataclass
class Load:
    """Clients in a closed loop from threads, recording (time, status, revision)."""

    url: str
    key: str
    concurrency: int
    outcomes: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 600  # bounded even if the caller dies
        headers = {"authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    reply = http.post("/v2/models/breast-cancer/infer", json=BODY)
                    revision = reply.headers.get("x-modelport-revision", "")
                    self.outcomes.append((time.monotonic(), reply.status_code, revision))
                except httpx.TransportError:
                    self.outcomes.append((time.monotonic(), 0, ""))

    def window(self, start: float, end: float) -> list[tuple[float, int, str]]:
        return [o for o in self.outcomes if start <= o[0] < end]


def wait_state(
    admin: httpx.Client, states: tuple[str, ...], limit_s: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        rollout = admin.get("/api/v1/endpoints/breast-cancer/rollout").json()
        if rollout.get("state") in states:
            return dict(rollout)
        time.sleep(0.1)
    raise TimeoutError(f"rollout not {states} in {limit_s} s")


Transition = tuple[str, float, float, float, dict[str, Any]]


def transitions(server: BenchServer) -> list[Transition]:
    """Runs each transition; returns (name, start, action call, action returned, rollout)."""
    done = []
    with httpx.Client(base_url=server.url, headers=server.admin, timeout=60) as admin:
        model = admin.get("/api/v1/models/breast-cancer").json()
        digest = model["versions"][0]["artifact_digest"]
        for _ in range(4):
            admin.post(
                "/api/v1/models/breast-cancer/versions",
                json={"runtime": "onnx", "artifact_digest": digest},
            ).raise_for_status()
        for name, version, plan in (("canary", 2, CANARY), ("blue-green", 3, BLUE_GREEN)):
            start = time.monotonic()
            admin.post("/api/v1/apply", json={"intent": intent(version, plan)}).raise_for_status()
            rollout = wait_state(admin, ("promoted", "rolled_back"))
            done.append((name, start, start, time.monotonic(), rollout))

        for name, version, action in (("promote", 4, "promote"), ("rollback", 5, "rollback")):
            start = time.monotonic()
            admin.post("/api/v1/apply", json={"intent": intent(version, HELD)}).raise_for_status()
            wait_state(admin, ("progressing",))
            time.sleep(1.0)  # both revisions answering
            called = time.monotonic()
            reply = admin.post(f"/api/v1/endpoints/breast-cancer/rollout/{action}")
            reply.raise_for_status()
            end = time.monotonic()
            time.sleep(2.0)
            done.append((name, start, called, end, reply.json()))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with modelport_server("breast-cancer") as server:
        load = Load(server.url, server.key, args.concurrency)
        threads = [threading.Thread(target=load.run) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            results = transitions(server)
        finally:
            load._stop.set()
            for thread in threads:
                thread.join()
    print(f"concurrency {args.concurrency}, {len(load.outcomes)} requests in all")
    print(f"{'transition':<12}{'outcome':>13}{'requests':>10}{'failed':>8}  revisions")
    starts = [transition[1] for transition in results[1:]] + [float("inf")]
    for (name, start, called, end, rollout), until in zip(results, starts, strict=True):
        outcome = rollout["state"]
        during = load.window(start, until)  # from this transition's start to the next one's
        failed = sum(1 for o in during if o[1] != 200)
        revisions = Counter(o[2] for o in during)
        print(f"{name:<12}{outcome:>13}{len(during):>10}{failed:>8}  {dict(revisions)}")
        if name == "rollback":
            stable = rollout["from_revision"]
            last_new = max((o[0] for o in during if o[2] != stable), default=called)
            print(
                f"rollback: the call took {1000 * (end - called):.0f} ms; the last response from "
                f"the new revision came {1000 * max(last_new - called, 0.0):.0f} ms after the "
                f"call was made ({stable} answered everything after that)"
            )
    total_failed = sum(1 for o in load.outcomes if o[1] != 200)
    print(f"failed requests in all: {total_failed}")


if __name__ == "__main__":
    main()
