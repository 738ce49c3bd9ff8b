"""Tracing and structured logs across real processes: a server and its worker export spans of
one trace to a real OTLP/HTTP receiver, and log JSON lines carrying the request id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    model_directory,
    register_python,
    start_server,
    stop_server,
    wait_for,
)
from tests.unit.otlp_receiver import OtlpReceiver, otlp_receiver

pytestmark = pytest.mark.integration

ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"

BROKEN_MODEL = """
class Broken:
    def predict(self, inputs):
        raise RuntimeError("the model broke")
"""


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, OtlpReceiver, str]]:
    """A server exporting spans to a receiver and logging JSON lines; with ``breast-cancer``,
    a custom model that always fails (``broken``), and an API key."""
    base = tmp_path_factory.mktemp("traced")
    directory = model_directory(base, "broken", BROKEN_MODEL)
    with otlp_receiver() as receiver:
        env = {
            **BREAST_CANCER_ONLY,
            "MODELPORT_OTLP_ENDPOINT": receiver.url,
            "MODELPORT_LOG_FORMAT": "json",
        }
        running = start_server(base / "home", "--demo", env=env)
        try:
            with running.client() as admin:
                register_python(
                    admin, "broken", directory, "model:Broken", {"x": [-1]}, {"y": [-1]}
                )
                admin.create_endpoint("broken", "broken:1")
                admin.wait_ready("breast-cancer", timeout=120)
                admin.wait_ready("broken", timeout=60)
                key = admin.create_key("default", "traced")["key"]
            yield running, receiver, key
        finally:
            stop_server(running)


def test_one_trace_from_the_client_through_the_gateway_to_the_worker(traced) -> None:
    running, receiver, key = traced
    headers = {
        "authorization": f"Bearer {key}",
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
        "x-request-id": "trace-test-1",
    }
    reply = httpx.post(f"{running.url}/v2/models/breast-cancer/infer", json=ROW, headers=headers)
    assert reply.status_code == 200
    spans = receiver.wait_for(3, trace_id=TRACE_ID)
    by_kind = {(s.service, s.kind): s for s in spans}
    assert set(by_kind) == {
        ("modelport", "server"),
        ("modelport", "client"),
        ("modelport-replica", "server"),
    }, spans
    gateway = by_kind["modelport", "server"]
    attempt = by_kind["modelport", "client"]
    worker = by_kind["modelport-replica", "server"]
    # The client's span is the gateway's parent; the gateway's attempt, the worker's.
    assert gateway.parent_span_id == PARENT_ID
    assert attempt.parent_span_id == gateway.span_id
    assert worker.parent_span_id == attempt.span_id
    expected: dict[str, Any] = {
        "modelport.endpoint": "breast-cancer",
        "modelport.revision": "r1",
        "modelport.request_id": "trace-test-1",
        "gen_ai.operation.name": "predict",
        "gen_ai.request.model": "breast-cancer",
        "http.response.status_code": 200,
        "modelport.usage.rows": 1,
    }
    assert gateway.attributes | expected == gateway.attributes
    assert worker.attributes | expected == worker.attributes
    assert gateway.attributes["gen_ai.response.model"] == "breast-cancer"
    assert worker.attributes["gen_ai.response.model"] == "breast-cancer:1"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.name == "predict breast-cancer"
    assert not (gateway.error or attempt.error or worker.error)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [orjson.loads(line) for line in lines]  # every line is one JSON object


def test_a_failure_is_logged_as_json_with_its_request_id_by_server_and_worker(traced) -> None:
    running, _, key = traced
    headers = {"authorization": f"Bearer {key}", "x-request-id": "abc-failing-1"}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    reply = httpx.post(f"{running.url}/v2/models/broken/infer", json=body, headers=headers)
    assert reply.status_code == 500 and reply.headers["x-request-id"] == "abc-failing-1"
    worker_log = running.home / "logs" / "broken@r1-0.log"

    def logged(path: Path) -> list[dict[str, Any]]:
        return [e for e in _json_lines(path) if e.get("request_id") == "abc-failing-1"]

    wait_for(lambda: logged(worker_log) and logged(running.log), 10, "the failure's log lines")
    (worker_line,) = logged(worker_log)
    assert worker_line["level"] == "ERROR" and worker_line["logger"] == "modelport.worker"
    assert "RuntimeError: the model broke" in worker_line["exception"]
    (server_line,) = logged(running.log)
    assert server_line["level"] == "WARNING" and "answered 500" in server_line["message"]
    # Tracing is on: each line names the trace its request belongs to, the same in both.
    assert worker_line["trace_id"] == server_line["trace_id"]
    assert {"time", "level", "logger", "message"} <= set(server_line)
    # Every line of the server's and of each worker's log is a JSON object.
    for path in [running.log, *(running.home / "logs").glob("*.log")]:
        assert _json_lines(path)
