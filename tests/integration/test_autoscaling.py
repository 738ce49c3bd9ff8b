"""Autoscaling on a real server: replicas follow a load step up and back down, and a revision
scaled to zero is woken by the request that finds it so, which waits and succeeds.

The model is a Python one that takes 100 ms per call (asynchronously), so that a handful of
client threads keeps several requests in flight, whatever the machine's speed. The intent's
windows are short (seconds), so the test takes well under a minute of load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelport.client import Client

from .conftest import BREAST_CANCER_ONLY, RunningServer, demo_server, ensure_project, wait_for

pytestmark = pytest.mark.integration

SLOWISH = """
import asyncio


class Scorer:
    async def predict(self, inputs):
        await asyncio.sleep(0.1)
        return {"score": inputs["features"].sum(axis=1)}
"""
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}


def intent(endpoint: str, replicas: str, autoscaling: str) -> str:
    return f"""\
endpoint: {endpoint}
project: autoscaling
task: custom
model: slowish:1
outcome: prove that replicas follow load
resources:
  replicas: {replicas}
  autoscaling:
{autoscaling}
"""


class Load:
    """``threads`` closed loops on the endpoint until stopped (or 90 s), counting outcomes."""

    def __init__(self, url: str, key: str, endpoint: str, threads: int) -> None:
        self.outcomes: list[int] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, key, endpoint)) for _ in range(threads)
        ]

    def _run(self, url: str, key: str, endpoint: str) -> None:
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    reply = http.post(f"/v2/models/{endpoint}/infer", json=BODY, timeout=30)
                    self.outcomes.append(reply.status_code)
                except httpx.TransportError:
                    self.outcomes.append(0)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with demo_server(
        tmp_path_factory.mktemp("autoscaling") / "home", env=BREAST_CANCER_ONLY
    ) as running:
        yield running


@pytest.fixture(scope="module")
def admin(srv: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    ensure_project(srv, "autoscaling")
    directory = tmp_path_factory.mktemp("slowish")
    (directory / "model.py").write_text(SLOWISH)
    with srv.client() as client:
        client.create_model("slowish", "custom")
        client.create_version(
            "slowish",
            "python",
            artifact_path=str(directory),
            runtime_options={"class": "model:Scorer"},
            signature=SIGNATURE,
        )
        yield client


@pytest.fixture(scope="module")
def key(admin: Client) -> str:
    return str(admin.create_key("autoscaling", "load")["key"])


def scaling(admin: Client, endpoint: str) -> dict[str, Any]:
    view = admin.get_endpoint(endpoint)
    assert view["autoscaling"] is not None, view
    return {
        **view["autoscaling"],
        "ready": sum(r["state"] == "ready" for r in view["replica_status"]),
    }


def test_replicas_follow_a_load_step_up_and_back_down_with_no_failed_request(
    srv: RunningServer, admin: Client, key: str
) -> None:
    autoscaling = "    target_in_flight: 1\n    scale_up_after: 1s\n    scale_down_after: 4s\n"
    admin.apply(intent("stepped", "{min: 1, max: 3}", autoscaling))
    admin.wait_ready("stepped")
    wait_for(
        lambda: admin.get_endpoint("stepped")["autoscaling"] is not None,
        timeout=10,
        message="the autoscaler to take the endpoint on",
    )
    assert scaling(admin, "stepped")["replicas"] == 1
    assert admin.get_endpoint("breast-cancer")["autoscaling"] is None  # a fixed count
    seen: list[dict[str, Any]] = []
    with Load(srv.url, key, "stepped", threads=6) as load:
        # 6 calls of 100 ms in flight against a target of 1 each: the most, 3, are wanted.
        def scaled_up() -> bool:
            seen.append(scaling(admin, "stepped"))
            return seen[-1]["ready"] >= 2

        wait_for(scaled_up, timeout=45, message="a second replica ready under load")
        time.sleep(2)  # the new replicas take their share of the load
    assert max(s["desired"] for s in seen) >= 2
    assert any("in flight" in s["reason"] for s in seen), seen
    # Load gone: after the down window, back to the minimum, one replica.
    wait_for(
        lambda: scaling(admin, "stepped")["replicas"] == 1,
        timeout=30,
        message="the endpoint to scale back down to 1",
    )
    assert len(admin.get_endpoint("stepped")["replica_status"]) == 1
    assert load.outcomes and set(load.outcomes) == {200}, (
        f"{sum(o != 200 for o in load.outcomes)} failed of {len(load.outcomes)}"
    )

    def moves() -> list[dict[str, Any]]:
        return admin.list_audit(actor="system", action="endpoints.scale", target="endpoint:stepped")

    # Each change is audited once it is made (a scale-down once its replicas drained).
    wait_for(
        lambda: any(m["details"]["replicas"] == 1 for m in moves()),
        timeout=30,
        message="the scale-down's audit entry",
    )
    assert any(m["details"]["replicas"] > 1 for m in moves()), moves()
    assert all(m["details"]["reason"] for m in moves())
    # A request after it all still answers, on the one replica left.
    with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {key}"}) as http:
        assert http.post("/v2/models/stepped/infer", json=BODY, timeout=30).status_code == 200
    admin.delete_endpoint("stepped")


def test_scaled_to_zero_then_a_request_waits_for_a_replica_and_succeeds(
    srv: RunningServer, admin: Client, key: str
) -> None:
    autoscaling = "    idle_to_zero_after: 2s\n    scale_down_after: 2s\n"
    admin.apply(intent("sleepy", "{min: 0, max: 2}", autoscaling))
    admin.wait_ready("sleepy")  # a new revision starts with one replica even with min 0
    with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {key}"}) as http:
        assert http.post("/v2/models/sleepy/infer", json=BODY, timeout=30).status_code == 200
        pid = admin.get_endpoint("sleepy")["replica_status"][0]["pid"]
        wait_for(
            lambda: not admin.get_endpoint("sleepy")["replica_status"],
            timeout=30,
            message="the endpoint to scale to zero after 2 s idle",
        )
        view = admin.get_endpoint("sleepy")
        assert view["autoscaling"]["replicas"] == 0
        assert "no request" in view["autoscaling"]["reason"]
        started = time.monotonic()
        reply = http.post("/v2/models/sleepy/infer", json=BODY, timeout=60)
        waited = time.monotonic() - started
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == [6.0]
        assert waited > 0.2  # it waited for a replica to start, rather than failing
        replicas = admin.get_endpoint("sleepy")["replica_status"]
        assert len(replicas) == 1 and replicas[0]["pid"] != pid
    moves = admin.list_audit(actor="system", action="endpoints.scale", target="endpoint:sleepy")
    assert [m["details"]["replicas"] for m in moves][-2:] == [0, 1], moves
    assert moves[-1]["details"]["reason"].startswith("woken by a request")
    admin.delete_endpoint("sleepy")


def test_a_request_to_zero_that_cannot_wait_long_enough_times_out_not_503(
    srv: RunningServer, admin: Client, key: str
) -> None:
    autoscaling = "    idle_to_zero_after: 1s\n"
    admin.apply(intent("brief", "{min: 0, max: 1}", autoscaling))
    admin.wait_ready("brief")
    wait_for(
        lambda: not admin.get_endpoint("brief")["replica_status"],
        timeout=30,
        message="the endpoint to scale to zero",
    )
    with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {key}"}) as http:
        # Less time than a worker takes to start: the deadline bounds the wait (504).
        reply = http.post(
            "/v2/models/brief/infer",
            json=BODY,
            headers={"x-modelport-timeout": "0.05"},
            timeout=30,
        )
        assert reply.status_code == 504, reply.text
        # The wake it asked for goes on: the next request finds (or waits for) the replica.
        assert http.post("/v2/models/brief/infer", json=BODY, timeout=60).status_code == 200
    admin.delete_endpoint("brief")
