"""The bench's load driver against a real loopback HTTP server that takes 5 ms a call: closed
levels and open-loop runs measured per replica, the replica's secret sent, refusals counted
as errors; in its own process as the server runs it. And the sample request per task."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from modelport.control.bench_load import BenchPlan, Sample, drive, drive_in_process
from modelport.control.benchmarking import check_plan, sample_request
from modelport.control.deployment import Deployment
from modelport.core.errors import InvalidRequest
from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.core.signature import Signature, TensorSpec
from tests.unit.loopback import read_request

TOKEN = b"s3cret-token"
SERVICE_S = 0.005
SAMPLE = Sample("/v2/models/m/infer", b'{"inputs": []}', "application/json", {"protocol": "v2"})


@pytest.fixture(scope="module")
def replica() -> Iterator[Upstream]:
    """A keep-alive HTTP server answering 200 after 5 ms to the right token, 401 otherwise."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    address: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                await asyncio.sleep(SERVICE_S)
                token = WORKER_TOKEN_HEADER + b": " + TOKEN + b"\r\n"
                status = b"200 OK" if token in request else b"401 Unauthorized"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    stop: list[asyncio.Event] = []

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        address.append(server.sockets[0].getsockname()[1])
        stop.append(asyncio.Event())
        started.set()
        await stop[0].wait()
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    started.wait(5)
    yield Upstream("127.0.0.1", address[0])
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(5)
    loop.close()


def test_closed_levels_then_open_loop_shares_of_the_top_throughput(replica: Upstream) -> None:
    plan = check_plan([1, 2], 0.5, open_loop=[0.4, 0.7])
    points = drive([replica], TOKEN, SAMPLE, plan)
    closed, opened = points[:2], points[2:]
    assert [p["concurrency"] for p in points] == [1, 2, 0, 0]
    for point in points:
        assert point["errors"] == 0, point
        assert point["p50_ms"] >= SERVICE_S * 1000 * 0.9
        assert point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
    # One caller waits 5 ms a call: at most 200 calls a second; two callers, twice that.
    assert 20 < closed[0]["rps"] <= 1 / SERVICE_S * 1.05
    top = max(p["rps"] for p in closed)
    assert [p["rate"] for p in opened] == [pytest.approx(s * top, rel=1e-3) for s in (0.4, 0.7)]
    for point in opened:
        assert point["rps"] == point["rate"]  # the load offered
        assert point["requests"] == max(1, int(point["rate"] * 0.5))
        assert point["run_p95_ms"] > 0  # the whole run's; p95_ms is the median of its thirds


def test_a_run_at_one_rate_and_refusals_counted_as_errors(replica: Upstream) -> None:
    (point,) = drive([replica], TOKEN, SAMPLE, BenchPlan((), 0.5, rate=40.0))
    assert (point["concurrency"], point["rate"], point["requests"], point["errors"]) == (
        0,
        40.0,
        20,
        0,
    )
    (refused,) = drive([replica], b"wrong", SAMPLE, BenchPlan((1,), 0.5))
    assert refused["errors"] == refused["requests"] > 0
    assert refused["p95_ms"] is None
    assert refused["last_error"].startswith("HTTP 401")


def test_the_load_runs_in_a_process_of_its_own(replica: Upstream) -> None:
    points = asyncio.run(drive_in_process([replica], TOKEN, SAMPLE, BenchPlan((1,), 0.5)))
    assert points[0]["errors"] == 0 and points[0]["requests"] > 10


def _deployment(task: str, inputs: list[TensorSpec]) -> Deployment:
    spec = ReplicaSpec(
        endpoint="ep",
        model="m",
        version=1,
        runtime="onnx",
        task=task,
        artifact_dir=Path(),
        artifact_digest="",
        signature=Signature(inputs=inputs),
    )
    return Deployment(spec=spec, replicas=1, token=TOKEN, signature=spec.signature)


def test_the_sample_is_built_from_the_task_and_signature() -> None:
    table = _deployment("tabular", [TensorSpec(name="x", datatype="FP32", shape=[-1, 3])])
    sample = sample_request(table, input_tokens=None, output_tokens=None)
    assert sample.path == "/v2/models/ep/infer"
    assert orjson.loads(sample.body) == {
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 0.0, 0.0]}]
    }
    # Alternatives (pixels or an encoded image): the numeric one is sent.
    image = TensorSpec(name="image", datatype="BYTES", shape=[-1], optional=True)
    pixels = TensorSpec(name="pixels", datatype="INT64", shape=[-1, 2, 2], optional=True)
    vision = sample_request(_deployment("vision", [image, pixels]), input_tokens=5, output_tokens=5)
    assert orjson.loads(vision.body)["inputs"][0]["data"] == [0, 0, 0, 0]
    chat = sample_request(_deployment("chat", []), input_tokens=5, output_tokens=7)
    body = orjson.loads(chat.body)
    assert chat.path == "/v1/chat/completions" and body["max_tokens"] == 7
    assert len(body["messages"][0]["content"].split()) == 5 and body["model"] == "ep"
    embed = sample_request(_deployment("embedding", []), input_tokens=None, output_tokens=None)
    assert embed.path == "/v1/embeddings"
    speech = sample_request(_deployment("asr", []), input_tokens=None, output_tokens=None)
    assert speech.content_type.startswith("multipart/form-data") and b"RIFF" in speech.body
    only_bytes = _deployment("custom", [TensorSpec(name="blob", datatype="BYTES", shape=[-1])])
    with pytest.raises(InvalidRequest) as caught:
        sample_request(only_bytes, input_tokens=None, output_tokens=None)
    assert caught.value.details["field"] == "revision"


def test_a_rate_is_checked_naming_the_field() -> None:
    assert check_plan(None, 2.0, rate=50.0) == BenchPlan((), 2.0, rate=50.0)
    assert check_plan(None, 1.0).concurrency == (1, 2, 4, 8)
    for args, field in [
        ((None, 1.0, 0.0), "rate"),
        ((None, 1.0, 1e9), "rate"),
        (([1], 1.0, 10.0), "rate"),
        ((None, 100.0, 10.0), "duration"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            check_plan(*args)
        assert caught.value.details["field"] == field
    with pytest.raises(InvalidRequest) as caught:
        check_plan(None, 1.0, 10.0, [0.5])
    assert caught.value.details["field"] == "open_loop"
    with pytest.raises(InvalidRequest) as caught:
        check_plan([1], 1.0, None, [0.5, 0.0])
    assert caught.value.details["field"] == "open_loop[1]"
