"""``modelport bench`` on a real server: a bounded load straight at a revision's replicas, in
their own protocol (V2 for the tabular demo, OpenAI for the chat demo), stored as a profile
with the machine; bad input a 4xx naming the field, with nothing stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError
from tests.integration.conftest import RunningServer, demo_server

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"MODELPORT_DEMO_MODELS": "breast-cancer,chat-small"}
    home = tmp_path_factory.mktemp("bench") / "home"
    with demo_server(home, "breast-cancer", "chat-small", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(served: RunningServer) -> Iterator[Client]:
    with served.client() as client:
        yield client


def test_bench_measures_each_level_and_stores_the_profile(admin: Client) -> None:
    started = time.monotonic()
    profile = admin.bench("breast-cancer", concurrency=[2, 1], duration="1s")
    assert time.monotonic() - started < 30
    assert (profile["endpoint"], profile["revision"]) == ("breast-cancer", "r1")
    assert (profile["model"], profile["hardware"], profile["replicas"]) == (
        "breast-cancer:1",
        "cpu",
        1,
    )
    # The levels in increasing order, then open loop at 40%, 55% and 70% of the top rps.
    points = profile["points"]
    assert [p["concurrency"] for p in points] == [1, 2, 0, 0, 0]
    top = max(points[0]["rps"], points[1]["rps"])
    assert [p["rate"] for p in points[2:]] == [
        pytest.approx(share * top, rel=1e-3) for share in (0.4, 0.55, 0.7)
    ]
    assert all(p["rps"] == p["rate"] and p["completed_rps"] > 0 for p in points[2:])
    # Closed-loop levels pace themselves; at 3/4 of the top rate, open loop, a shared 2-core
    # machine can fall behind (counted as errors, and then not taken as capacity).
    for point in points[:-1]:
        assert point["errors"] == 0, point
        assert point["requests"] > 10
        assert point["rps"] > 0
        assert 0 < point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
    assert profile["sample"] == {"protocol": "v2", "inputs": {"input": [1, 30]}}
    machine = profile["machine"]
    assert machine["cores"] >= 1 and machine["usable_cores"] >= 1 and machine["cpu"]
    assert machine["memory_gb"] > 0 and machine["platform"]
    stored = admin.profiles("breast-cancer")
    assert stored[0] == profile


def test_bench_of_a_chat_model_speaks_openai(admin: Client) -> None:
    profile = admin.bench("chat-small", concurrency=[1], duration=1.0, open_loop=[])
    (point,) = profile["points"]
    # Answered in the replica's protocol: a call may outlast the run on a busy machine, but
    # none is refused as a malformed request.
    assert point["requests"] > point["errors"] and point["p95_ms"] > 0, point
    assert "HTTP 4" not in point.get("last_error", ""), point
    assert profile["sample"]["protocol"] == "openai"
    assert profile["model"] == "chat-small:1"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"concurrency": []}, 400, "concurrency"),
        ({"concurrency": [1, 0]}, 400, "concurrency[1]"),
        ({"concurrency": [100]}, 400, "concurrency[0]"),
        ({"duration": "soon"}, 400, "duration"),
        ({"duration": 0.1}, 400, "duration"),
        ({"duration": "30s", "concurrency": [1, 2]}, 400, "duration"),
        ({"revision": "r7"}, 400, "revision"),
        ({"revision": "latest"}, 422, "revision"),
        ({"concurrency": ["2"]}, 422, "concurrency.0"),
        ({"concurrency": [True]}, 422, "concurrency.0"),
        ({"warp": 9}, 422, "warp"),
        ({"open_loop": [0.5, 1.5]}, 400, "open_loop[1]"),
        ({"open_loop": [0.1] * 9}, 400, "open_loop"),
        ({"rate": 0}, 400, "rate"),
        ({"rate": 10, "concurrency": [1]}, 400, "rate"),
        ({"rate": 10, "open_loop": [0.5]}, 400, "open_loop"),
        ({"rate": 10, "duration": "2m"}, 400, "duration"),
    ],
)
def test_bad_bench_input_is_a_4xx_naming_the_field_and_stores_nothing(
    served: RunningServer, admin: Client, body: dict[str, object], status: int, field: str
) -> None:
    before = len(admin.profiles("breast-cancer"))
    response = admin._http.post("/api/v1/endpoints/breast-cancer/bench", json=body)
    assert response.status_code == status, response.text
    details = response.json()["error"]["details"]
    fields = [details.get("field")] + [e["field"] for e in details.get("errors", [])]
    assert field in fields
    assert len(admin.profiles("breast-cancer")) == before


def test_an_unknown_endpoint_is_404(admin: Client) -> None:
    with pytest.raises(ModelportClientError) as caught:
        admin.bench("no-such-endpoint", concurrency=[1], duration=1)
    assert caught.value.status == 404
    with pytest.raises(ModelportClientError) as caught:
        admin.profiles("no-such-endpoint")
    assert caught.value.status == 404


def test_the_cli_prints_the_profile(served: RunningServer) -> None:
    args = ["--url", served.url, "--token", served.admin_token]
    result = runner.invoke(
        app, ["bench", "breast-cancer", "--concurrency", "1", "--duration", "500ms", *args]
    )
    assert result.exit_code == 0, result.output
    assert "p95" in result.output and "breast-cancer:1" in result.output
    as_json = ["--concurrency", "1", "--duration", "0.5", "--open-loop", "", "--format", "json"]
    result = runner.invoke(app, ["bench", "breast-cancer", *as_json, *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["points"][0]["concurrency"] == 1
    result = runner.invoke(
        app,
        ["bench", "breast-cancer", "--rate", "20", "--duration", "0.5", "--format", "json", *args],
    )
    assert result.exit_code == 0, result.output
    checked = json.loads(result.output)
    assert checked["id"] is None and checked["points"][0]["rate"] == 20
    result = runner.invoke(app, ["bench", "breast-cancer", "--concurrency", "x", *args])
    assert result.exit_code == 2
    result = runner.invoke(app, ["hardware", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    names = [entry["name"] for entry in json.loads(result.output)]
    assert {"cpu", "t4", "h100"} <= set(names)
