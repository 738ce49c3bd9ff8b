"""compare's pure parts: the ranking per task, and the cost and verdicts from measured
figures (the price book's unit prices first, else the hardware's hourly price)."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.control.compare import Prepared, _judge, rank
from modelport.core.intent import intent_digest, parse_intent
from modelport.core.usage import Units
from modelport.observability.pricing import Price, PriceBook


def _row(ref: str, p95: float | None, **metrics: float) -> dict[str, Any]:
    return {"candidate": ref, "metrics": metrics, "latency": {"p95_ms": p95}}


def test_rank_by_first_metric_then_second_then_p95() -> None:
    ranked = rank(
        [
            _row("slow-best", 90.0, accuracy=0.96, macro_f1=0.95),
            _row("fast-best", 10.0, accuracy=0.96, macro_f1=0.95),
            _row("better-f1", 99.0, accuracy=0.96, macro_f1=0.97),
            _row("worse", 1.0, accuracy=0.90, macro_f1=0.99),
            _row("no-p95", None, accuracy=0.96, macro_f1=0.95),
        ]
    )
    assert [r["candidate"] for r in ranked] == [
        "better-f1",
        "fast-best",
        "slow-best",
        "no-p95",
        "worse",
    ]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5]


def test_rank_word_error_rate_lower_is_better() -> None:
    ranked = rank([_row("a", 5.0, word_error_rate=0.3), _row("b", 50.0, word_error_rate=0.1)])
    assert [r["candidate"] for r in ranked] == ["b", "a"]


def _prepared(text: str) -> Prepared:
    intent = parse_intent(text)
    return Prepared(
        id="x",
        intent=intent,
        digest=intent_digest(intent),
        candidates=(),
        rows=1,
        hardware="cpu",
        task="tabular",
        max_tokens=64,
    )


class _Candidate:
    model = "m"
    version = 2


INTENT = (
    "endpoint: e\ntask: tabular\nmodel: m:1\ntraffic:\n  peak_rps: 25\n"
    "slo:\n  p95_latency_ms: 20\nbudget:\n  monthly_usd: 100\n"
)
LATENCY = {"p95_ms": 12.0, "throughput_rps": 10.0}
PER_1K = Units(requests=1000, rows=1000)


def test_hardware_price_over_measured_throughput() -> None:
    book = PriceBook([Price("hardware", "cpu", "per_hour", 360_000_000, 0.0)])  # $0.36/h
    verdict = _judge(book, _prepared(INTENT), _Candidate(), LATENCY, PER_1K)  # type: ignore[arg-type]
    # 10 rps = 36,000 requests an hour for $0.36: $0.01 per 1,000.
    assert verdict["cost_per_1k_usd"] == pytest.approx(0.01)
    assert verdict["cost_basis"].startswith("hardware: cpu at $0.36/h")
    # 25 rps needs 3 replicas of 10 rps: 3 x $0.36 x 730 h.
    assert verdict["monthly_usd_at_peak"] == pytest.approx(788.4)
    assert verdict["meets_slo"] is True and verdict["meets_budget"] is False


def test_model_version_unit_price_first_and_no_targets_no_verdicts() -> None:
    book = PriceBook(
        [
            Price("hardware", "cpu", "per_hour", 360_000_000, 0.0),
            Price("model_version", "m:2", "per_1k_rows", 1_000_000, 0.0),  # $0.001
        ]
    )
    verdict = _judge(book, _prepared(INTENT), _Candidate(), LATENCY, PER_1K)  # type: ignore[arg-type]
    assert verdict["cost_basis"] == "price book: m:2"
    assert verdict["cost_per_1k_usd"] == pytest.approx(0.001)
    assert verdict["monthly_usd_at_peak"] == pytest.approx(0.001 * 25 * 3600 * 730 / 1000)
    assert verdict["meets_budget"] is True
    bare = _prepared("endpoint: e\ntask: tabular\nmodel: m:1\n")
    verdict = _judge(book, bare, _Candidate(), {"p95_ms": 50.0, "throughput_rps": 10.0}, PER_1K)  # type: ignore[arg-type]
    assert verdict["meets_slo"] is None and verdict["meets_budget"] is None
    assert verdict["monthly_usd_at_peak"] is None
