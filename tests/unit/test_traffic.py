"""Which revision answers: traffic_of (control side) and choose/pinned (gateway side)."""

from __future__ import annotations

from collections import Counter

import pytest

from modelport.control.analysis import Gates, Verdict, both, judge
from modelport.control.traffic import consumers_of, traffic_of
from modelport.core.errors import NotFound
from modelport.core.intent import Routing, parse_intent
from modelport.core.routing import KeyPrincipal, Route, Upstream
from modelport.gateway.traffic import bucket_of, choose, pinned
from modelport.observability.windows import WindowStats

KEY = KeyPrincipal("key-1", "crm", "tests", can_route_by_header=True)


def _route(label: str) -> Route:
    return Route("ep", "m", int(label[1:]), b"{}", b"t", (Upstream("127.0.0.1", 1),), label=label)


ROUTES = {label: _route(label) for label in ("r1", "r2", "r3")}


def _routing(yaml_routing: str) -> Routing:
    text = f"endpoint: ep\ntask: tabular\nmodel: m:1\nrouting:\n{yaml_routing}"
    return parse_intent(text).routing


def _scope(**headers: str) -> dict[str, object]:
    return {"headers": [(k.encode(), v.encode()) for k, v in headers.items()]}


def _share(traffic, n: int = 4000, **kw) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(choose(traffic, _scope(), KEY, None)[0].label for _ in range(n))


def test_one_revision_takes_everything() -> None:
    traffic = traffic_of({"r1": ROUTES["r1"]}, stable="r1")
    assert traffic.split == () and _share(traffic, 50) == {"r1": 50}


def test_weights_split_traffic() -> None:
    traffic = traffic_of(ROUTES, stable="r1", candidate="r2", weight=10)
    share = _share(traffic)
    assert set(share) == {"r1", "r2"}
    assert 250 < share["r2"] < 550  # 10% of 4000, with room for chance
    full = traffic_of(ROUTES, stable="r1", candidate="r2", weight=100)
    assert full.primary.label == "r2" and _share(full, 50) == {"r2": 50}


def test_shadow_mirrors_without_answering() -> None:
    traffic = traffic_of(ROUTES, stable="r1", candidate="r2", shadow_sample=0.2)
    assert traffic.shadow is ROUTES["r2"] and traffic.shadow_sample == 0.2
    assert _share(traffic, 100) == {"r1": 100}


def test_sticky_customers_keep_their_revision_as_the_canary_widens() -> None:
    routing = _routing("  sticky: customer\n")
    at_10 = traffic_of(ROUTES, stable="r1", candidate="r2", weight=10, routing=routing)
    at_50 = traffic_of(ROUTES, stable="r1", candidate="r2", weight=50, routing=routing)
    for customer in (f"customer-{i}" for i in range(200)):
        first = choose(at_10, _scope(), KEY, customer)[0].label
        assert {choose(at_10, _scope(), KEY, customer)[0].label for _ in range(5)} == {first}
        if first == "r2":
            assert choose(at_50, _scope(), KEY, customer)[0].label == "r2"
    assert bucket_of("acme") == bucket_of("acme")


def test_segments_match_header_customer_key_and_project() -> None:
    routing = _routing(
        "  segments:\n"
        "    - match: {header: {X-Tier: beta}}\n      revision: candidate\n"
        "    - match: {customer: acme}\n      revision: r3\n"
        "    - match: {key: key-9}\n      revision: stable\n"
        "    - match: {project: crm}\n      revision: candidate\n"
    )
    traffic = traffic_of(ROUTES, stable="r1", candidate="r2", weight=0, routing=routing)
    assert choose(traffic, _scope(**{"x-tier": "beta"}), KEY, None)[0].label == "r2"
    assert choose(traffic, _scope(), KEY, "acme")[0].label == "r3"
    other = KeyPrincipal("key-9", "crm", "x")
    assert choose(traffic, _scope(), other, None)[0].label == "r1"  # key rule comes first
    assert choose(traffic, _scope(), KEY, None)[0].label == "r2"  # project crm
    # No rollout: rules for the candidate are dropped and their traffic follows the weights.
    settled = traffic_of({"r1": ROUTES["r1"]}, stable="r1", routing=routing)
    assert choose(settled, _scope(**{"x-tier": "beta"}), KEY, None)[0].label == "r1"


def test_the_endpoint_timeout_reaches_the_gateway() -> None:
    traffic = traffic_of(ROUTES, stable="r1", routing=_routing("  timeout: 90s\n"))
    assert traffic.timeout_s == 90.0
    assert traffic_of(ROUTES, stable="r1").timeout_s is None


def test_only_calls_drawn_by_weight_feed_the_slo_window() -> None:
    routing = _routing(
        "  segments:\n    - match: {header: {x-tier: beta}}\n      revision: candidate\n"
    )
    traffic = traffic_of(ROUTES, stable="r1", candidate="r2", weight=50, routing=routing)
    route, judged = choose(traffic, _scope(**{"x-tier": "beta"}), KEY, None)
    assert route.label == "r2" and not judged  # steered by the caller: not a sample
    assert all(choose(traffic, _scope(), KEY, None)[1] for _ in range(20))


def test_fallback_chain_resolves_previous_and_keeps_endpoint_names() -> None:
    routing = _routing("  fallback: [previous, backup]\n")
    during = traffic_of(ROUTES, stable="r1", candidate="r2", weight=50, routing=routing)
    assert during.fallback["r2"] == (ROUTES["r1"], "backup")
    assert during.fallback["r1"] == ("backup",)  # nothing before the stable revision
    after = traffic_of(ROUTES, stable="r2", previous="r1", routing=routing)
    assert after.fallback["r2"] == (ROUTES["r1"], "backup")  # blue-green: the warm one


def test_pinned_names_running_revisions_only() -> None:
    traffic = traffic_of({"r1": ROUTES["r1"], "r2": ROUTES["r2"]}, stable="r1")
    assert pinned(traffic, "r2") is ROUTES["r2"]
    with pytest.raises(
        NotFound, match=r"revision 'r3' of endpoint 'ep' is not running \(running: r1, r2\)"
    ):
        pinned(traffic, "r3")


def _stats(requests: int, errors: int, p95: float | None = 10.0) -> WindowStats:
    rate = errors / requests if requests else 0.0
    return WindowStats(requests, errors, rate, p95, p95, p95)


GATES = Gates(max_error_rate=0.05, p95_latency_ms=100, min_requests=20, interval_s=10)


def test_judge_waits_passes_and_fails() -> None:
    assert judge(_stats(5, 0), GATES, 60).decision == "wait"  # too few requests
    assert "5 more" in judge(_stats(15, 0), GATES, 60).reason
    assert judge(_stats(50, 0), GATES, 3).decision == "wait"  # too early
    assert judge(_stats(50, 2), GATES, 10).decision == "pass"  # 4% <= 5%
    failed = judge(_stats(20, 2), GATES, 3)  # 10%: fails at once, before the interval
    assert failed.decision == "fail" and "10.00%" in failed.reason and "2 of 20" in failed.reason
    slow = judge(_stats(30, 0, p95=250.0), GATES, 1)
    assert slow.decision == "fail" and "p95 latency 250.0 ms" in slow.reason
    assert judge(_stats(10, 10), GATES, 60).decision == "wait"  # not judged below min
    no_gate = Gates(max_error_rate=0.01, p95_latency_ms=None, min_requests=0, interval_s=1)
    assert judge(_stats(0, 0, None), no_gate, 2).decision == "pass"


def test_a_revision_without_ready_replicas_leaves_its_share_to_the_stable_one() -> None:
    starting = Route("ep", "m", 2, b"{}", b"t", (), label="r2")
    traffic = traffic_of(
        {"r1": ROUTES["r1"], "r2": starting}, stable="r1", candidate="r2", weight=90
    )
    assert _share(traffic, 200) == {"r1": 200}


def test_two_gates_fail_on_either_and_pass_on_both() -> None:
    passed, held, failed = Verdict("pass", "p"), Verdict("wait", "w"), Verdict("fail", "f")
    assert both(passed, None) is passed
    assert both(failed, passed) is failed
    assert both(passed, failed) is failed
    assert both(held, failed) is failed
    assert both(passed, held) is held  # a passing SLO waits for the other gate's evidence
    assert both(held, passed) is held
    assert both(passed, passed) is passed  # the SLO's reason is the one shown


def test_header_rules_apply_only_to_keys_allowed_to_route_by_header() -> None:
    routing = _routing("  segments:\n    - match: {header: {X-Tier: beta}}\n      revision: r2\n")
    traffic = traffic_of(ROUTES, stable="r1", routing=routing)
    plain = KeyPrincipal("key-2", "crm", "tests")
    assert choose(traffic, _scope(**{"x-tier": "beta"}), plain, None) == (ROUTES["r1"], True)
    assert choose(traffic, _scope(**{"x-tier": "beta"}), KEY, None) == (ROUTES["r2"], False)


def test_consumers_always_hold_the_endpoints_own_project() -> None:
    text = (
        "endpoint: ep\ntask: tabular\nmodel: m:1\nproject: crm\nconsumers: [team:ads, key:key_1]\n"
    )
    intent = parse_intent(text)
    assert consumers_of(intent) == {"project:crm", "team:ads", "key:key_1"}
    assert consumers_of(None) == {"project:default"}
    traffic = traffic_of(ROUTES, stable="r1", consumers=consumers_of(intent))
    assert traffic.consumers == {"project:crm", "team:ads", "key:key_1"}
