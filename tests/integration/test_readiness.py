"""Ready means ready: the server's readiness waits for every endpoint it starts with."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    model_directory,
    register_python,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration

SLOW_LOADING = """
import asyncio


class SlowToLoad:
    async def load(self):
        await asyncio.sleep(4)

    async def predict(self, inputs):
        return {"y": inputs["x"]}
"""


def test_server_ready_waits_for_every_endpoint(tmp_path: Path) -> None:
    directory = model_directory(tmp_path, "slow", SLOW_LOADING)
    home = tmp_path / "home"
    first = start_server(home, "--demo", env=BREAST_CANCER_ONLY)
    try:
        with first.client() as admin:
            register_python(
                admin, "slow-load", directory, "model:SlowToLoad", {"x": [-1]}, {"y": [-1]}
            )
            admin.create_endpoint("slow-load", "slow-load:1")
            admin.wait_ready("slow-load")
    finally:
        stop_server(first)

    # Restarted, the server starts both endpoints; one of them takes four seconds to load.
    second = start_server(home, "--demo", env=BREAST_CANCER_ONLY)
    try:
        with second.client() as admin:
            key = admin.create_key("default", "ready")["key"]
        seen: list[tuple[int, list[str]]] = []
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=second.url) as http:
            while time.monotonic() < deadline:
                reply = http.get("/v2/health/ready")  # a probe needs no credential
                seen.append((reply.status_code, reply.json()["waiting"]))
                if reply.status_code == 200:
                    break
                time.sleep(0.1)
            assert seen[0][0] == 503
            assert "endpoint 'slow-load' has no ready replica" in seen[0][1]
            assert seen[-1] == (200, [])
            # Once ready, it serves: no 503 for the first requests.
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
            headers = {"authorization": f"Bearer {key}"}
            assert http.post("/v2/models/slow-load/infer", json=body, headers=headers).is_success
        deadline = time.monotonic() + 10
        while "ready: 2 endpoint(s) serving" not in second.log.read_text():
            assert time.monotonic() < deadline, "the server never said it was ready"
            time.sleep(0.1)
    finally:
        stop_server(second)
