"""Metrics from usage records and live state, their route's auth, and the Grafana dashboard
built on them (pure logic; promtool checks the exposition and the dashboard's queries)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelport.core.routing import Route, RoutingSnapshot, Traffic, Upstream
from modelport.core.usage import Units, UsageRecord
from modelport.gateway.balancing import LeastOutstanding
from modelport.gateway.upstream import UpstreamPool
from modelport.observability.live_metrics import (
    Budget,
    Load,
    ReplicaCount,
    RolloutProgress,
    budgets_of,
)
from modelport.observability.metrics import MetricsRoute, ModelportMetrics
from modelport.observability.slo import Counts, SloSpec, evaluate

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "modelport.json"
# `make system` installs it (Debian package prometheus): a missing promtool fails these tests
# rather than skipping them, so the exposition is never left unchecked.
PROMTOOL = shutil.which("promtool") or "promtool"


def _record(
    endpoint: str = "bc",
    task: str = "tabular",
    status: int = 200,
    latency_ms: float = 4.0,
    upstream_ms: float = 3.5,
    units: Units | None = None,
    ttft_ms: float | None = None,
) -> UsageRecord:
    return UsageRecord(
        request_id="req",
        endpoint=endpoint,
        revision="r1",
        key_id="key-secret-id",
        project="proj",
        customer="acme-customer",
        status=status,
        latency_ms=latency_ms,
        units=units or Units(),
        task=task,
        team="team-a",
        ttft_ms=ttft_ms,
        upstream_ms=upstream_ms,
        streamed=ttft_ms is not None,
    )


def _samples(metrics: ModelportMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render()[0].decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(metrics: ModelportMetrics, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [
        value
        for (sample, have), value in _samples(metrics).items()
        if sample == name and set(labels.items()) <= have
    ]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


def _full(metrics: ModelportMetrics) -> ModelportMetrics:
    """Every metric with at least one sample: each task's units, a stream, live state."""
    metrics.consume(
        [
            _record(units=Units(rows=3)),
            _record(status=503, latency_ms=1.0, upstream_ms=0.0),
            _record("digits", "vision", units=Units(images=2)),
            _record("asr", "asr", units=Units(audio_seconds=1.5)),
            _record(
                "chat",
                "chat",
                latency_ms=1050.0,
                upstream_ms=1049.0,
                units=Units(input_tokens=12, output_tokens=11),
                ttft_ms=50.0,
            ),
        ]
    )
    metrics.watch(
        load=lambda: [Load("bc", "r1", "tabular", 3, 1)],
        replicas=lambda: [ReplicaCount("bc", "r1", "tabular", "ready", 2)],
        rollouts=lambda: [RolloutProgress("bc", "r2", "progressing", 2, 3, 0.25)],
        budgets=lambda: [Budget("bc", "availability", 0.75)],
    )
    return metrics


# -- what the records become --------------------------------------------------------------


def test_records_count_per_endpoint_revision_task_and_status_in_seconds() -> None:
    metrics = ModelportMetrics()
    metrics.consume([_record(units=Units(rows=3)), _record(units=Units(rows=2))])
    metrics.consume([_record(status=503, latency_ms=1.0, upstream_ms=0.0)])
    base = {"endpoint": "bc", "revision": "r1", "task": "tabular"}
    assert _value(metrics, "modelport_requests_total", status="200", **base) == 2
    assert _value(metrics, "modelport_requests_total", status="503", **base) == 1
    assert _value(metrics, "modelport_rows_total", **base) == 5
    genai = {"gen_ai_request_model": "bc", "gen_ai_operation_name": "tabular"}
    ok = _value(metrics, "gen_ai_server_request_duration_seconds_sum", error_type="", **genai)
    assert ok == pytest.approx(0.008)  # 2 x 4 ms, in seconds
    failed = _value(
        metrics, "gen_ai_server_request_duration_seconds_count", error_type="503", **genai
    )
    assert failed == 1
    # Overhead is latency minus upstream time: 0.5 + 0.5 + 1.0 ms.
    assert _value(metrics, "modelport_gateway_overhead_seconds_sum", **base) == pytest.approx(0.002)
    assert _value(metrics, "modelport_gateway_overhead_seconds_count", **base) == 3
    le_300us = _value(metrics, "modelport_gateway_overhead_seconds_bucket", le="0.0005", **base)
    assert le_300us == 2


def test_a_stream_gives_tokens_time_to_first_token_and_time_per_output_token() -> None:
    metrics = ModelportMetrics()
    units = Units(input_tokens=12, output_tokens=11)
    metrics.consume([_record("chat", "chat", 200, 1050.0, 1049.0, units, ttft_ms=50.0)])
    genai = {"gen_ai_request_model": "chat", "gen_ai_operation_name": "chat"}
    assert _value(metrics, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 12
    assert _value(metrics, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 11
    ttft = _value(metrics, "gen_ai_server_time_to_first_token_seconds_sum", **genai)
    assert ttft == pytest.approx(0.05)
    # (1050 - 50) ms over the 10 tokens after the first.
    tpot = _value(metrics, "gen_ai_server_time_per_output_token_seconds_sum", **genai)
    assert tpot == pytest.approx(0.1)
    assert _value(metrics, "gen_ai_server_request_duration_seconds_count", **genai) == 1


def test_failed_streams_and_other_tasks_show_no_token_timings() -> None:
    metrics = ModelportMetrics()
    metrics.consume(
        [
            _record("chat", "chat", 500, 900.0, 899.0, Units(output_tokens=4), ttft_ms=30.0),
            _record(units=Units(rows=1)),
        ]
    )
    names = {name for name, _ in _samples(metrics)}
    assert not any(name.startswith("gen_ai_server_time_to_first_token") for name in names)
    assert not any(name.startswith("gen_ai_server_time_per_output_token") for name in names)
    # Billable tokens count whatever the status.
    assert _value(metrics, "gen_ai_client_token_usage_count", gen_ai_token_type="output") == 1


def test_no_label_carries_a_key_customer_team_or_project() -> None:
    metrics = _full(ModelportMetrics())
    allowed = {
        "endpoint",
        "revision",
        "task",
        "status",
        "state",
        "objective",
        "le",
        "error_type",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_token_type",
    }
    text = metrics.render()[0].decode()
    for secret in ("key-secret-id", "acme-customer", "team-a", "proj"):
        assert secret not in text
    for _, labels in _samples(metrics):
        assert {name for name, _ in labels} <= allowed


def test_label_sets_are_made_once_and_reused() -> None:
    metrics = ModelportMetrics()
    metrics.consume([_record() for _ in range(50)])
    metrics.consume([_record(status=404) for _ in range(5)])
    assert len(metrics._series) == 2
    child = metrics._series[("bc", "r1", "tabular", 200)]
    metrics.consume([_record()])
    assert metrics._series[("bc", "r1", "tabular", 200)] is child


# -- live state ----------------------------------------------------------------------------


def test_a_retired_revisions_series_go_after_two_scrapes_without_it() -> None:
    """Series of a revision that no longer serves are dropped (many rollouts must not pile
    up series), but only at the second scrape without it: the first still shows its last
    values. A revision that serves again keeps its series."""
    metrics = ModelportMetrics()
    serving = {("bc", "r1"), ("bc", "r2"), ("chat", "r1")}
    metrics.watch(serving=lambda: serving)
    retired = dataclasses.replace(_record(units=Units(rows=3)), revision="r2")
    stream = _record("chat", "chat", units=Units(input_tokens=4, output_tokens=5), ttft_ms=9.0)
    metrics.consume([_record(units=Units(rows=1)), retired, stream])

    def revisions() -> set[tuple[str, str]]:
        return {
            (
                dict(labels).get("endpoint") or dict(labels)["gen_ai_request_model"],
                dict(labels)["revision"],
            )
            for _, labels in _samples(metrics)
            if "revision" in dict(labels)
        }

    assert revisions() == serving
    serving.discard(("bc", "r2"))
    serving.discard(("chat", "r1"))
    assert revisions() == {("bc", "r1"), ("bc", "r2"), ("chat", "r1")}  # first scrape without
    assert revisions() == {("bc", "r1")}  # second: gone, tokens and time to first token too
    assert _value(metrics, "modelport_rows_total", revision="r1") == 1
    metrics.consume([retired])  # a straggler after the retirement: counted again, then gone
    assert ("bc", "r2") in revisions()
    assert ("bc", "r2") not in revisions()


def test_live_state_is_read_at_each_scrape() -> None:
    metrics = _full(ModelportMetrics())
    assert _value(metrics, "modelport_requests_in_flight", endpoint="bc") == 3
    assert _value(metrics, "modelport_requests_queued", endpoint="bc") == 1
    assert _value(metrics, "modelport_replicas", state="ready") == 2
    assert _value(metrics, "modelport_rollout_state", state="progressing") == 1
    assert _value(metrics, "modelport_rollout_state", state="paused") == 0
    assert _value(metrics, "modelport_rollout_step", revision="r2") == 2
    assert _value(metrics, "modelport_rollout_steps", revision="r2") == 3
    assert _value(metrics, "modelport_rollout_traffic_ratio", revision="r2") == 0.25
    budget = _value(metrics, "modelport_slo_error_budget_remaining_ratio", objective="availability")
    assert budget == 0.75
    in_flight = [Load("bc", "r1", "tabular", 7, 0)]
    metrics.watch(load=lambda: in_flight)
    assert _value(metrics, "modelport_requests_in_flight", endpoint="bc") == 7


def test_a_failing_provider_costs_its_metrics_not_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Iterable[ReplicaCount]:
        raise RuntimeError("the backend is gone")

    metrics = _full(ModelportMetrics())
    metrics.watch(replicas=broken, budgets=lambda: 1 / 0)
    samples = {name for name, _ in _samples(metrics)}
    assert "modelport_requests_in_flight" in samples
    assert "modelport_replicas" not in samples
    assert "modelport_slo_error_budget_remaining_ratio" not in samples
    assert "reading replicas failed" in caplog.text


class _Objective:
    def __init__(self, name: str) -> None:
        self.name = name


class _ObjectiveStatus:
    def __init__(self, name: str, remaining: float) -> None:
        self.objective = _Objective(name)
        self.budget_remaining = remaining


class _SloStatus:
    def __init__(self, endpoint: str, *objectives: _ObjectiveStatus) -> None:
        self.endpoint = endpoint
        self.objectives = objectives


def test_error_budgets_are_read_from_the_shapes_an_slo_snapshot_takes() -> None:
    statuses = [_SloStatus("bc", _ObjectiveStatus("availability", 0.5))]
    assert budgets_of(statuses) == [Budget("bc", "availability", 0.5)]
    by_endpoint = {"bc": _SloStatus("bc", _ObjectiveStatus("latency", -0.25))}
    assert budgets_of(by_endpoint) == [Budget("bc", "latency", -0.25)]
    as_dicts = {
        "bc": {"objectives": [{"objective": "availability", "budget_remaining": 1.0}]},
        "chat": {"objectives": {"latency": {"budget_remaining": 0.1}, "availability": 0.9}},
    }
    assert budgets_of(as_dicts) == [
        Budget("bc", "availability", 1.0),
        Budget("chat", "latency", 0.1),
        Budget("chat", "availability", 0.9),
    ]
    assert budgets_of(None) == []
    assert budgets_of({"bc": {"objectives": [{"objective": "x", "budget_remaining": "?"}]}}) == []


def test_error_budgets_of_the_slo_books_snapshot() -> None:
    spec = SloSpec.of(availability=99.0, p95_latency_ms=200.0)
    assert spec is not None
    # 1,000 valid events: 5 errors spend half the 1% budget; 10 slow ones a fifth of 5%.
    status = evaluate("bc", spec, Counts(valid=1000, errors=5, slow=10), {}, at=0.0)
    metrics = ModelportMetrics()
    metrics.watch(budgets=lambda: {"bc": status})
    name = "modelport_slo_error_budget_remaining_ratio"
    assert _value(metrics, name, endpoint="bc", objective="availability") == pytest.approx(0.5)
    assert _value(metrics, name, endpoint="bc", objective="latency") == pytest.approx(0.8)


async def test_in_flight_and_queued_per_revision_come_from_the_gateway() -> None:
    one, two, three = Upstream("127.0.0.1", 1), Upstream("127.0.0.1", 2), Upstream("h", 3)
    stable = Route("bc", "bc", 1, b"{}", b"t", replicas=(one, two))
    canary = Route("bc", "bc", 2, b"{}", b"t", replicas=(three,), label="r2")
    traffic = Traffic(stable, MappingProxyType({"r1": stable, "r2": canary}))
    snapshot = RoutingSnapshot.of([traffic])
    balancer = LeastOutstanding()
    balancer.in_flight_counts.update({one: 2, two: 1, three: 3})
    pool = UpstreamPool(max_connections=1)
    slot = pool._slot(three)
    await slot.acquire()  # the one connection to `three` is taken: two more calls wait
    waiting = [asyncio.create_task(slot.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    try:
        assert pool.queued(three) == 2
        assert pool.queued(one) == 0
        loads = balancer.load(snapshot, pool.queued)
    finally:
        for task in waiting:
            task.cancel()
    assert loads == [Load("bc", "r1", "tabular", 3, 0), Load("bc", "r2", "tabular", 1, 2)]


# -- the exposition ------------------------------------------------------------------------


def test_promtool_accepts_the_exposition() -> None:
    text = _full(ModelportMetrics()).render()[0]
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not checked.stdout.strip() and not checked.stderr.strip()


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    metrics = _full(ModelportMetrics())
    text, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"_created" not in text
    open_body, open_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert open_type.startswith("application/openmetrics-text")
    assert open_body.endswith(b"# EOF\n")


async def _call(route: MetricsRoute, method: str, token: str | None) -> tuple[int, dict, bytes]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await route({"type": "http", "method": method, "headers": headers}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def test_the_route_wants_a_token_it_accepts() -> None:
    route = MetricsRoute(_full(ModelportMetrics()), lambda token: token == b"good")
    status, headers, body = await _call(route, "GET", None)
    assert status == 401 and headers[b"www-authenticate"].startswith(b"Bearer")
    assert b"modelport_requests_total" not in body
    assert (await _call(route, "GET", "bad"))[0] == 401
    status, headers, body = await _call(route, "GET", "good")
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain")
    assert b'modelport_requests_total{endpoint="bc"' in body
    assert (await _call(route, "POST", "good"))[0] == 405


# -- the dashboard -------------------------------------------------------------------------


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_every_metric_the_dashboard_queries_exists() -> None:
    queries = _queries()
    assert len(queries) >= 15
    # A metric is a name before a selector's brace (label names sit inside or after "by").
    named = [re.findall(r"\b((?:gen_ai|modelport)_\w+)\{", q) for q in queries]
    assert all(named), queries
    used = {name for names in named for name in names}
    exposed = {name for name, _ in _samples(_full(ModelportMetrics()))}
    assert used - exposed == set()
    # Every metric is on the dashboard (in some form: a histogram by its _bucket or _sum).
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exposed}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert families - shown == set()


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    exprs = [q.replace("$__rate_interval", "5m").replace("$endpoint", ".*") for q in _queries()]
    rules.write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query{i}", "expr": e}
                            for i, e in enumerate(exprs)
                        ],
                    }
                ]
            }
        )
    )
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
