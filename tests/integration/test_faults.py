"""Faults under load: a replica killed with SIGKILL, the server stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    model_directory,
    register_python,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.integration

ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}

SLOW_MODEL = """
import asyncio


class Slow:
    def load(self):
        pass

    async def predict(self, inputs):
        await asyncio.sleep(1.5)
        return {"y": inputs["x"] * 2}
"""


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[RunningServer]:
    with demo_server(tmp_path / "home", "breast-cancer", env=BREAST_CANCER_ONLY) as running:
        yield running


def _load(url: str, key: str, path: str, seconds: float) -> tuple[int, list[str]]:
    """Requests from four threads for ``seconds``: how many answered 200, and the failures."""
    failures: list[str] = []
    answered = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        nonlocal answered
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as http:
            while time.monotonic() < stop:
                try:
                    reply = http.post(path, json=ROW, timeout=10)
                    ok, why = reply.status_code == 200, f"{reply.status_code} {reply.text}"
                except httpx.HTTPError as exc:
                    ok, why = False, repr(exc)
                with lock:
                    if ok:
                        answered += 1
                    else:
                        failures.append(why)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered, failures


def test_a_killed_replica_fails_no_request(fresh: RunningServer) -> None:
    with fresh.client() as admin:
        admin.create_endpoint("bc2", "breast-cancer@champion", replicas=2)
        before = admin.wait_ready("bc2")["replica_status"]
        key = admin.create_key("default", "faults")["key"]
        victim = before[0]

        def kill_soon() -> None:
            time.sleep(1.0)
            os.kill(victim["pid"], signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        answered, failures = _load(fresh.url, key, "/v2/models/bc2/infer", 4.0)
        killer.join()
        assert failures == [] and answered > 50

        def back() -> bool:
            replicas = admin.get_endpoint("bc2")["replica_status"]
            return all(r["state"] == "ready" for r in replicas) and victim["pid"] not in {
                r["pid"] for r in replicas
            }

        wait_for(back, timeout=15, message="the killed replica to be back")


def test_sigterm_answers_every_request_in_flight(tmp_path: Path) -> None:
    directory = model_directory(tmp_path, "slow", SLOW_MODEL)
    running = start_server(tmp_path / "home", env=BREAST_CANCER_ONLY)
    try:
        with running.client() as admin:
            register_python(admin, "slow", directory, "model:Slow", {"x": [-1]}, {"y": [-1]})
            admin.create_endpoint("slow", "slow:1")
            admin.wait_ready("slow")
            key = admin.create_key("default", "sigterm")["key"]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}

        def call(_: int) -> tuple[int, bytes]:
            headers = {"authorization": f"Bearer {key}"}
            reply = httpx.post(
                f"{running.url}/v2/models/slow/infer", json=body, headers=headers, timeout=30
            )
            return reply.status_code, reply.content

        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(call, i) for i in range(4)]
            time.sleep(0.7)  # every call is now in the replica, sleeping
            running.process.send_signal(signal.SIGTERM)
            results = [c.result() for c in calls]
        assert [status for status, _ in results] == [200] * 4
        for _, content in results:
            outputs = orjson.loads(content)["outputs"]
            assert next(o for o in outputs if o["name"] == "y")["data"] == [2.0, 4.0]
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert running.process.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in running.log.read_text()
    finally:
        stop_server(running)
