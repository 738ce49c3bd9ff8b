"""``/metrics`` of a real server: known requests show as exact counts in the right units,
promtool accepts the exposition, and a scrape needs the admin or the metrics token."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import BREAST_CANCER_ONLY, RunningServer, demo_server, wait_for

pytestmark = pytest.mark.integration

METRICS_TOKEN = "scrape-token-for-tests"
# `make system` installs it (Debian package prometheus); missing, the test fails, never skips.
PROMTOOL = shutil.which("promtool") or "promtool"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(url: str, token: str) -> str:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _sum(samples: Samples, name: str, **labels: str) -> float:
    """The total of ``name`` over every sample whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def _promtool(text: str) -> None:
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    problems = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and not problems, problems


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_METRICS_TOKEN": METRICS_TOKEN}
    home = tmp_path_factory.mktemp("metrics") / "home"
    with demo_server(home, "breast-cancer", env=env) as running:
        with running.client() as admin:
            key: str = admin.create_key("default", "metrics")["key"]
        yield running, key


def test_known_requests_show_as_exact_counts_in_seconds_and_rows(
    tabular: tuple[RunningServer, str],
) -> None:
    server, key = tabular
    url = f"{server.url}/v2/models/breast-cancer/infer"
    two_rows = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 30],
                            "data": [0.5] * 60}]}  # fmt: skip
    wrong = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 29],
                         "data": [0.5] * 29}]}  # fmt: skip
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(7):
            assert client.post(url, json=two_rows).status_code == 200
        for _ in range(2):
            assert client.post(url, json=wrong).status_code == 400

    def counted() -> bool:
        samples = _samples(_scrape(server.url, METRICS_TOKEN))
        return _sum(samples, "modelport_requests_total") == 9

    # The journal hands records to metrics in batches, a few times a second.
    wait_for(counted, timeout=10, message="9 requests in /metrics")
    text = _scrape(server.url, server.admin_token)
    _promtool(text)
    samples = _samples(text)
    base = {"endpoint": "breast-cancer", "revision": "r1", "task": "tabular"}
    assert _sum(samples, "modelport_requests_total", status="200", **base) == 7
    assert _sum(samples, "modelport_requests_total", status="400", **base) == 2
    assert _sum(samples, "modelport_rows_total", **base) == 14
    genai = {"gen_ai_request_model": "breast-cancer", "gen_ai_operation_name": "tabular"}
    name = "gen_ai_server_request_duration_seconds"
    assert _sum(samples, f"{name}_count", error_type="", **genai) == 7
    assert _sum(samples, f"{name}_count", error_type="400", **genai) == 2
    seconds = _sum(samples, f"{name}_sum", **genai)
    assert 0 < seconds < 9 * 2.0  # seconds, not milliseconds: a local row takes a few ms
    # All of them within the 2.56 s bucket; none a whole 10 ms on the smallest one.
    assert _sum(samples, f"{name}_bucket", le="2.56", **genai) == 9
    overhead = _sum(samples, "modelport_gateway_overhead_seconds_sum", **base)
    assert _sum(samples, "modelport_gateway_overhead_seconds_count", **base) == 9
    assert 0 < overhead < seconds  # the replica's own work is not Modelport's overhead
    assert _sum(samples, "modelport_replicas", state="ready", **base) == 1
    assert _sum(samples, "modelport_replicas", state="failed", **base) == 0
    assert _sum(samples, "modelport_requests_in_flight", **base) == 0
    assert _sum(samples, "modelport_requests_queued", **base) == 0
    # No key, project or customer in any label.
    assert key not in text and "default" not in text


def test_a_scrape_needs_the_admin_or_the_metrics_token(
    tabular: tuple[RunningServer, str],
) -> None:
    server, key = tabular
    metrics = f"{server.url}/metrics"
    missing = httpx.get(metrics)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "MODELPORT_METRICS_TOKEN" in missing.json()["error"]
    for token in (key, "wrong", METRICS_TOKEN + "x"):
        wrong = httpx.get(metrics, headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 401, token
    assert "modelport_replicas" in _scrape(server.url, METRICS_TOKEN)
    assert "modelport_replicas" in _scrape(server.url, server.admin_token)
    assert (
        httpx.post(metrics, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 405
    )


def test_a_stream_shows_its_tokens_and_time_to_first_token(
    server: RunningServer, api_key: str
) -> None:
    """On the session's server (all demos): deltas, since other tests send traffic too."""
    labels = {"gen_ai_request_model": "chat-small", "gen_ai_operation_name": "chat"}
    before = _samples(_scrape(server.url, server.admin_token))
    ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0)
    with ai:
        stream = ai.chat.completions.create(
            model="chat-small",
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        for chunk in stream:
            usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens > 1

    def delta(name: str, **more: str) -> float:
        after = _samples(_scrape(server.url, server.admin_token))
        return _sum(after, name, **labels, **more) - _sum(before, name, **labels, **more)

    ttft = "gen_ai_server_time_to_first_token_seconds"
    wait_for(lambda: delta(f"{ttft}_count") == 1, timeout=10, message="the stream in /metrics")
    tokens = "gen_ai_client_token_usage_sum"
    assert delta(tokens, gen_ai_token_type="output") == usage.completion_tokens
    assert delta(tokens, gen_ai_token_type="input") == usage.prompt_tokens
    first = delta(f"{ttft}_sum")
    whole = delta("gen_ai_server_request_duration_seconds_sum")
    assert 0 < first <= whole < 60
    assert delta("gen_ai_server_time_per_output_token_seconds_count") == 1
    _promtool(_scrape(server.url, server.admin_token))
