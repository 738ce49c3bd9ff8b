"""Per-revision SLO windows and shadow comparisons, on a clock the tests move."""

from __future__ import annotations

import orjson

from modelport.observability.shadow import ShadowComparison, ShadowReports
from modelport.observability.windows import RevisionWindows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_percentiles_are_nearest_rank_and_errors_are_5xx_only() -> None:
    windows = RevisionWindows(clock=Clock())
    for latency in range(1, 101):
        windows.record("ep", "r1", float(latency), 200)
    for status in (500, 503, 400, 404, 499):
        windows.record("ep", "r1", 1.0, status)
    stats = windows.stats("ep", "r1")
    assert (stats.requests, stats.errors) == (105, 2)
    assert stats.error_rate == 2 / 105
    only = RevisionWindows(clock=Clock())
    for latency in range(1, 101):
        only.record("ep", "r1", float(latency), 200)
    exact = only.stats("ep", "r1")
    assert (exact.p50_ms, exact.p95_ms, exact.p99_ms) == (50.0, 95.0, 99.0)
    empty = only.stats("ep", "r9")
    assert (empty.requests, empty.error_rate, empty.p95_ms) == (0, 0.0, None)


def test_since_horizon_cap_and_forget() -> None:
    clock = Clock()
    windows = RevisionWindows(horizon_s=60, max_samples=5, clock=clock)
    windows.record("ep", "r1", 10.0, 500)
    clock.now += 30
    mark = windows.now()
    windows.record("ep", "r1", 20.0, 200)
    assert windows.stats("ep", "r1", since=mark).requests == 1
    assert windows.stats("ep", "r1").requests == 2
    clock.now += 45  # the first sample is now older than the horizon
    assert windows.stats("ep", "r1").to_dict()["requests"] == 1
    for _ in range(10):
        windows.record("ep", "r1", 1.0, 200)
    assert windows.stats("ep", "r1").requests == 5  # capped
    windows.record("ep", "r2", 1.0, 200)
    windows.record("other", "r1", 1.0, 200)
    assert set(windows.snapshot()) == {"ep", "other"}
    windows.forget("ep", "r1")
    assert set(windows.snapshot()["ep"]) == {"r2"}
    windows.forget("ep")
    assert set(windows.snapshot()) == {"other"}


def _v2(*data: float) -> bytes:
    return orjson.dumps({"outputs": [{"name": "label", "datatype": "FP32", "data": list(data)}]})


def _add(comparison: ShadowComparison, primary: bytes, shadow: bytes, **kw: int) -> None:
    comparison.add(
        primary_status=kw.get("primary_status", 200),
        primary_latency_ms=kw.get("primary_ms", 10),
        primary_body=primary,
        primary_output_tokens=kw.get("primary_tokens", 0),
        shadow_status=kw.get("shadow_status", 200),
        shadow_latency_ms=kw.get("shadow_ms", 20),
        shadow_body=shadow,
        shadow_output_tokens=kw.get("shadow_tokens", 0),
    )


def test_agreement_counts_equal_v2_outputs_only() -> None:
    comparison = ShadowComparison()
    _add(comparison, _v2(1, 2), _v2(1, 2))
    _add(comparison, _v2(0.1), _v2(0.1 + 1e-9))  # within tolerance
    _add(comparison, _v2(1), _v2(0))  # disagrees
    _add(comparison, b'{"choices": []}', b'{"choices": []}')  # not V2: not judged
    _add(comparison, b"\x00garbage", b"[1, 2")  # never raises
    _add(comparison, _v2(1), b"", shadow_status=503)
    report = comparison.report()
    assert report["compared"] == 6
    assert report["agreement"] == {"compared": 3, "agreed": 2, "rate": 2 / 3}
    assert report["shadow"]["errors"] == 1 and report["primary"]["errors"] == 0
    assert report["shadow"]["p50_ms"] == 20 and report["primary"]["p95_ms"] == 10
    assert report["output_tokens"] == {"primary_mean": None, "shadow_mean": None}


def test_deeply_nested_v2_data_does_not_raise() -> None:
    # orjson accepts 1024 levels; a recursive comparison used to hit RecursionError at ~400.
    nested = b"[" * 1000 + b"1.0" + b"]" * 1000
    body = b'{"outputs": [{"name": "label", "data": ' + nested + b"}]}"
    other = body.replace(b"1.0", b"2.0")
    comparison = ShadowComparison()
    _add(comparison, body, body)
    _add(comparison, body, other)
    assert comparison.report()["agreement"] == {"compared": 2, "agreed": 1, "rate": 0.5}


def test_output_length_for_llms_and_the_latency_cap() -> None:
    comparison = ShadowComparison(max_pairs=2)
    _add(comparison, b"{}", b"{}", primary_tokens=10, shadow_tokens=30)
    _add(comparison, b"{}", b"{}", primary_tokens=20, shadow_tokens=10)
    _add(comparison, b"{}", b"{}", primary_tokens=0, shadow_tokens=0)  # no tokens: not counted
    report = comparison.report()
    assert report["output_tokens"] == {"primary_mean": 15.0, "shadow_mean": 20.0}
    assert report["compared"] == 3 and len(comparison.primary.latencies_ms) == 2


def test_reports_per_endpoint_and_revision() -> None:
    reports = ShadowReports()
    assert reports.report("ep", "r2") is None
    _add(reports.get("ep", "r2"), _v2(1), _v2(1))
    assert reports.get("ep", "r2") is reports.get("ep", "r2")
    assert reports.report("ep", "r2")["agreement"]["rate"] == 1.0  # type: ignore[index]
    reports.forget("ep")
    assert reports.report("ep", "r2") is None
