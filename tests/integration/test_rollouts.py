"""Revisions and rollouts against a real server, real workers and continuous bounded load.

A custom Python model ships one behaviour per version: versions 1, 2 and 4 answer correctly,
version 3 fails half of its requests, version 5 is slow. The load generator records every
response's status and revision, so "zero failed requests" is counted, not assumed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.client import Client, ModelportClientError

from .conftest import (
    ALL_KEY_PERMISSIONS,
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    ensure_project,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.integration

GOOD = """
import numpy as np


class Scorer:
    def predict(self, inputs):
        return {"score": inputs["features"].sum(axis=1)}
"""
BROKEN = """
import itertools

_calls = itertools.count()


class Scorer:
    def predict(self, inputs):
        if next(_calls) % 2:
            raise RuntimeError("half of my answers are wrong")
        return {"score": inputs["features"].sum(axis=1)}
"""
SLOW = """
import asyncio


class Scorer:
    async def predict(self, inputs):
        await asyncio.sleep(0.25)
        return {"score": inputs["features"].sum(axis=1)}
"""
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}


def intent(version: int, rollout: str = "strategy: immediate", extra: str = "") -> str:
    return f"""\
endpoint: scorer
project: rollouts
task: custom
model: scorer:{version}
outcome: prove that rollouts drop nothing
slo:
  p95_latency_ms: 150
  max_error_rate: 0.05
rollout:
  {rollout}
{extra}"""


class Load:
    """Calls the endpoint from a thread until stopped (or 120 s), counting every outcome."""

    def __init__(self, url: str, key: str, headers: dict[str, str] | None = None) -> None:
        self.outcomes: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, key, headers or {}))

    def _run(self, url: str, key: str, headers: dict[str, str]) -> None:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    reply = http.post(
                        "/v2/models/scorer/infer", json=BODY, headers=headers, timeout=10
                    )
                    revision = reply.headers.get("x-modelport-revision", "")
                    self.outcomes.append((time.monotonic(), reply.status_code, revision))
                except httpx.TransportError:
                    self.outcomes.append((time.monotonic(), 0, ""))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def failures(self) -> list[tuple[float, int, str]]:
        return [o for o in self.outcomes if o[1] != 200]

    def revisions(self) -> Counter[str]:
        return Counter(o[2] for o in self.outcomes)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_ROLLOUT_TICK_S": "0.1"}
    with demo_server(tmp_path_factory.mktemp("rollouts") / "home", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(srv: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("scorers")
    ensure_project(srv, "rollouts")  # the intents' project, and its keys'
    with srv.client() as client:
        client.create_model("scorer", "custom")
        for version, code in enumerate((GOOD, GOOD, BROKEN, GOOD, SLOW), start=1):
            directory = root / f"v{version}"
            directory.mkdir()
            (directory / "model.py").write_text(code)
            client.create_version(
                "scorer",
                "python",
                artifact_path=str(directory),
                runtime_options={"class": "model:Scorer"},
                signature=SIGNATURE,
            )
        yield client


@pytest.fixture(scope="module")
def key(admin: Client) -> str:
    # Pins revisions, steers by header and names customers: privileges given explicitly.
    return str(admin.create_key("rollouts", "load", permissions=ALL_KEY_PERMISSIONS)["key"])


@pytest.fixture(scope="module")
def endpoint(admin: Client, key: str) -> str:
    assert admin.apply(intent(1))["action"] == "created"
    admin.wait_ready("scorer")
    return "scorer"


def serving(admin: Client) -> dict[str, float]:
    return {r["name"]: r["traffic_percent"] for r in admin.get_endpoint("scorer")["revisions"]}


def test_apply_twice_changes_nothing_and_diff_says_what_would(admin: Client, endpoint: str) -> None:
    again = admin.apply(intent(1))
    assert again["action"] == "unchanged" and again["changes"] == []
    preview = admin.diff(intent(2, "strategy: canary"))
    assert preview["action"] == "rollout" and preview["revision"] == "r2"
    fields = {c["field"]: (c["before"], c["after"]) for c in preview["changes"]}
    assert fields["model"] == ("scorer:1", "scorer:2")
    assert fields["rollout.strategy"] == ("immediate", "canary")
    # A dry run wrote nothing: still one revision, no rollout.
    assert [r["name"] for r in admin.list_revisions("scorer")] == ["r1"]
    with pytest.raises(ModelportClientError) as none:
        admin.rollout("scorer")
    assert none.value.status == 404


def test_canary_under_load_drops_nothing(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    canary = "strategy: canary\n  steps: [20, 50, 100]\n  interval: 1s\n  min_requests: 10"
    with Load(srv.url, key) as load:
        result = admin.apply(intent(2, canary))
        assert (result["action"], result["revision"]) == ("rollout", "r2")
        rollout = admin.wait_rollout("scorer", timeout=90)
    assert rollout["state"] == "promoted", rollout
    assert load.failures == []
    assert {"r1", "r2"} <= set(load.revisions())
    kinds = [e["kind"] for e in rollout["events"]]
    assert kinds.count("step") == 3 and kinds[-1] == "promoted"
    # Each later step, and the promotion, record the window of the step that passed.
    judged = [e["data"] for e in rollout["events"] if e["kind"] in ("step", "promoted")][1:]
    assert [d["traffic_percent"] for d in judged] == [20.0, 50.0, 100.0]
    assert all(d["window"]["requests"] >= 10 and d["window"]["errors"] == 0 for d in judged)
    assert serving(admin) == {"r2": 100.0}


def test_broken_version_is_rolled_back_and_fallback_hides_it(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    canary = "strategy: canary\n  steps: [50, 100]\n  interval: 30s\n  min_requests: 10"
    with Load(srv.url, key) as load:
        admin.apply(intent(3, canary, "routing:\n  fallback: [previous]\n"))
        rollout = admin.wait_rollout("scorer", timeout=90)
    assert rollout["state"] == "rolled_back"
    assert "error rate" in rollout["reason"] and "breaches the SLO" in rollout["reason"]
    breach = rollout["events"][-1]
    assert breach["kind"] == "rolled_back" and breach["data"]["window"]["errors"] > 0
    assert load.failures == []  # every failed answer of r3 was retried on r2
    assert serving(admin) == {"r2": 100.0}
    history = admin.rollout_history("scorer")
    assert [r["state"] for r in history[:2]] == ["rolled_back", "promoted"]


def test_slow_version_is_rolled_back_on_p95(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    canary = "strategy: canary\n  steps: [50, 100]\n  interval: 30s\n  min_requests: 8"
    with Load(srv.url, key) as load:
        admin.apply(intent(5, canary))
        rollout = admin.wait_rollout("scorer", timeout=90)
    assert rollout["state"] == "rolled_back"
    assert "p95 latency" in rollout["reason"]
    assert load.failures == []


def test_manual_promote_and_rollback_under_load(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    slow_canary = "strategy: canary\n  steps: [30, 100]\n  interval: 10m\n  min_requests: 5"
    with Load(srv.url, key) as load:
        new = admin.apply(intent(4, slow_canary))["revision"]
        wait_for(lambda: admin.rollout("scorer")["state"] == "progressing", 60, "canary")
        assert serving(admin) == {"r2": 70.0, new: 30.0}
        promoted = admin.rollout_action("scorer", "promote")
        assert promoted["state"] == "promoted"
        wait_for(lambda: serving(admin) == {new: 100.0}, 10, f"{new} alone")

        admin.apply(intent(1, slow_canary))
        wait_for(lambda: admin.rollout("scorer")["state"] == "progressing", 60, "canary")
        asked = time.monotonic()
        rolled = admin.rollout_action("scorer", "rollback")
        assert rolled["state"] == "rolled_back"
        assert rolled["reason"] == "rolled back by admin"
        time.sleep(1.5)
    assert load.failures == []
    late = [o for o in load.outcomes if o[0] > asked + 1.0]
    assert late and {o[2] for o in late} == {new}  # within a second, all on it again


def test_blue_green_switches_at_once_and_keeps_the_old_one_warm(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    blue_green = "strategy: blue-green\n  interval: 1s\n  min_requests: 5\n  keep_previous: 3s"
    old = admin.get_endpoint("scorer")["stable_revision"]
    with Load(srv.url, key) as load:
        new = admin.apply(intent(2, blue_green))["revision"]
        rollout = admin.wait_rollout("scorer", timeout=90)
        assert rollout["state"] == "promoted"
        running = {r["name"] for r in admin.list_revisions("scorer") if r["running"]}
        assert running == {old, new}  # the old one, warm for a quick way back
    assert load.failures == []
    assert load.revisions()[new] > 0
    # One atomic switch: once the new revision answered, the old one never did again.
    first_new = min(o[0] for o in load.outcomes if o[2] == new)
    assert all(o[2] == new for o in load.outcomes if o[0] > first_new)
    wait_for(
        lambda: {r["name"] for r in admin.list_revisions("scorer") if r["running"]} == {new},
        15,
        "the old revision to retire",
    )


def test_shadow_compares_without_answering(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    shadow = "strategy: shadow\n  shadow_sample: 1.0\n  interval: 1s\n  min_requests: 10"
    stable = admin.get_endpoint("scorer")["stable_revision"]
    with Load(srv.url, key) as load:
        new = admin.apply(intent(4, shadow))["revision"]
        rollout = admin.wait_rollout("scorer", ("paused", "rolled_back"), timeout=90)
    assert rollout["state"] == "paused"
    assert "shadow passed" in rollout["events"][-1]["message"]
    assert load.failures == [] and set(load.revisions()) == {stable}  # the new one answered nobody
    report = rollout["live"]["shadow"]
    assert report["compared"] >= 10 and report["agreement"]["rate"] == 1.0
    assert report["shadow"]["errors"] == 0 and report["shadow"]["p95_ms"] is not None
    assert admin.rollout_action("scorer", "promote")["state"] == "promoted"
    assert serving(admin) == {new: 100.0}


def test_segments_stickiness_and_pinning(
    admin: Client, key: str, srv: RunningServer, endpoint: str
) -> None:
    routing = (
        "routing:\n  segments:\n    - match: {header: {x-tier: beta}}\n      revision: candidate\n"
        "  sticky: customer\n"
    )
    paused = "strategy: canary\n  steps: [50, 100]\n  interval: 10m\n  min_requests: 1000"
    stable = admin.get_endpoint("scorer")["stable_revision"]
    new = admin.apply(intent(1, paused, routing))["revision"]
    wait_for(lambda: admin.rollout("scorer")["state"] == "progressing", 60, "canary")
    with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {key}"}) as http:

        def revision(**headers: str) -> str:
            reply = http.post("/v2/models/scorer/infer", json=BODY, headers=headers)
            assert reply.status_code == 200, reply.text
            return reply.headers["x-modelport-revision"]

        assert {revision(**{"x-tier": "beta"}) for _ in range(20)} == {new}
        for customer in ("acme", "globex", "initech", "umbrella"):
            seen = {revision(**{"x-modelport-customer": customer}) for _ in range(10)}
            assert len(seen) == 1, f"{customer} saw {seen}"
        pinned = http.post(f"/v2/models/scorer/versions/{stable}/infer", json=BODY)
        assert pinned.headers["x-modelport-revision"] == stable
        gone = http.post("/v2/models/scorer/versions/r1/infer", json=BODY)
        running = ", ".join(sorted([stable, new]))
        assert gone.status_code == 404 and f"(running: {running})" in gone.json()["error"]
    assert admin.rollout_action("scorer", "abort")["state"] == "aborted"
    assert serving(admin) == {stable: 100.0}


def test_bad_intents_and_bad_moves_change_nothing(admin: Client, endpoint: str) -> None:
    before = (admin.get_endpoint("scorer"), admin.list_revisions("scorer"))
    cases = {
        intent(1) + "replicas: 2\n": (422, "replicas (line 11): unknown field"),
        intent(1).replace("p95_latency_ms: 150", "p95_latency_ms: fast"): (
            422,
            "slo.p95_latency_ms (line 7): must be a number, got 'fast'",
        ),
        intent(1, "strategy: canary\n  steps: [10, 50]"): (422, "must end at 100"),
        intent(99): (404, "model: model 'scorer' has no version 99"),
        intent(1).replace("scorer:1", "nosuch:1"): (404, "model 'nosuch' does not exist"),
        intent(1).replace("task: custom", "task: chat"): (422, "is a custom model"),
    }
    for text, (status, message) in cases.items():
        with pytest.raises(ModelportClientError) as bad:
            admin.apply(text)
        assert bad.value.status == status, bad.value.message
        assert message in bad.value.message, bad.value.message
    with pytest.raises(ModelportClientError) as no_rollout:
        admin.rollout_action("scorer", "promote")
    assert no_rollout.value.status == 409 and "no rollout in progress" in no_rollout.value.message
    with pytest.raises(ModelportClientError) as unknown:
        admin.rollout_action("nosuch", "pause")
    assert unknown.value.status == 404
    assert (admin.get_endpoint("scorer"), admin.list_revisions("scorer")) == before


def test_a_new_revision_waits_for_the_rollout_in_progress(admin: Client, endpoint: str) -> None:
    paused = "strategy: canary\n  steps: [50, 100]\n  interval: 10m\n  min_requests: 1000"
    admin.apply(intent(2, paused))
    wait_for(lambda: admin.rollout("scorer")["state"] == "progressing", 60, "canary")
    assert admin.rollout_action("scorer", "pause")["state"] == "paused"
    with pytest.raises(ModelportClientError) as busy:
        admin.apply(intent(4, paused))
    assert busy.value.status == 409 and "rollout in progress" in busy.value.message
    with pytest.raises(ModelportClientError) as paused_twice:
        admin.rollout_action("scorer", "pause")
    assert paused_twice.value.status == 409 and "is paused" in paused_twice.value.message
    assert admin.rollout_action("scorer", "resume")["state"] == "progressing"
    assert admin.rollout_action("scorer", "rollback")["state"] == "rolled_back"


def test_moving_the_alias_an_intent_names_rolls_out_a_new_revision(
    admin: Client, endpoint: str
) -> None:
    admin.set_alias("scorer", "champion", 2)
    text = intent(2).replace("model: scorer:2", "model: scorer@champion")
    assert admin.apply(text)["action"] == "rollout"  # the stable revision runs version 4
    assert admin.wait_rollout("scorer", timeout=60)["state"] == "promoted"
    stable = admin.get_endpoint("scorer")["stable_revision"]
    assert admin.apply(text)["action"] == "unchanged"
    admin.set_alias("scorer", "champion", 4)  # the file is the same; what it names is not
    preview = admin.diff(text)
    assert preview["action"] == "rollout"
    assert [c for c in preview["changes"] if c["field"] == "model"] == [
        {"field": "model", "before": "scorer:2", "after": "scorer:4"}
    ]
    moved = admin.apply(text)
    assert moved["revision"] != stable
    assert admin.wait_rollout("scorer", timeout=60)["state"] == "promoted"
    revisions = {r["name"]: r for r in admin.list_revisions("scorer")}
    assert revisions[moved["revision"]]["version"] == 4 and revisions[moved["revision"]]["running"]


def test_restart_resumes_a_canary_at_its_step(tmp_path: Path) -> None:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_ROLLOUT_TICK_S": "0.1"}
    home = tmp_path / "home"
    server = start_server(home, "--demo", env=env)
    try:
        with server.client() as admin:
            admin.wait_ready("breast-cancer")
            model = admin.get_model("breast-cancer")["versions"][0]
            admin.create_version("breast-cancer", "onnx", artifact_digest=model["artifact_digest"])
            key = str(admin.create_key("default", "restart")["key"])
            text = (
                "endpoint: breast-cancer\ntask: tabular\nmodel: breast-cancer:2\n"
                "rollout:\n  strategy: canary\n  steps: [10, 50, 100]\n  interval: 1s\n"
                "  min_requests: 10\n"
            )
            rows = np.zeros((1, 30), "f4")
            with server.client(key) as data:
                admin.apply(text)
                # Enough traffic for step 1 to pass, then none: step 2 waits for requests.
                wait_for(lambda: admin.rollout("breast-cancer")["state"] == "progressing")
                deadline = time.monotonic() + 60
                while admin.rollout("breast-cancer")["step"] < 1 and time.monotonic() < deadline:
                    for _ in range(20):
                        data.infer("breast-cancer", {"input": rows})
            assert admin.rollout("breast-cancer")["step"] == 1
        stop_server(server)
        server = start_server(home, "--demo", env=env)
        with server.client() as admin, server.client(key) as data:
            admin.wait_ready("breast-cancer")  # both revisions, since both are running
            assert serving_of(admin) == {"r1": 50.0, "r2": 50.0}
            rollout = admin.rollout("breast-cancer")
            assert (rollout["state"], rollout["step"]) == ("progressing", 1)
            assert rollout["events"][-1]["kind"] == "resumed"
            deadline = time.monotonic() + 60
            while admin.rollout("breast-cancer")["state"] == "progressing":
                assert time.monotonic() < deadline, admin.rollout("breast-cancer")
                for _ in range(20):
                    data.infer("breast-cancer", {"input": rows})
            assert admin.rollout("breast-cancer")["state"] == "promoted"
    finally:
        stop_server(server)


def serving_of(admin: Client) -> dict[str, float]:
    return {
        r["name"]: r["traffic_percent"] for r in admin.get_endpoint("breast-cancer")["revisions"]
    }
