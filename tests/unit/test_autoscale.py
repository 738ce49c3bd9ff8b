"""The autoscaler's decision (planning/autoscale.py), tick by tick on a fake clock; the
backend's scale on real supervision loops; the gateway's wait for a woken revision."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelport.backends import LocalBackend
from modelport.core.replica import ReplicaSpec
from modelport.core.routing import Route, RoutingSnapshot, Traffic, Upstream
from modelport.gateway.waking import Waker
from modelport.planning.autoscale import ScaleDecider


def decider(**overrides: float) -> ScaleDecider:
    values: dict[str, float] = {
        "min": 1,
        "max": 3,
        "target_in_flight": 2.0,
        "up_after_s": 3.0,
        "down_after_s": 10.0,
        "idle_to_zero_after_s": 30.0,
    }
    values.update(overrides)
    return ScaleDecider(
        min=int(values["min"]),
        max=int(values["max"]),
        target_in_flight=values["target_in_flight"],
        up_after_s=values["up_after_s"],
        down_after_s=values["down_after_s"],
        idle_to_zero_after_s=values["idle_to_zero_after_s"],
    )


def run(d: ScaleDecider, loads: list[float], replicas: int, start: float = 0.0) -> list[int]:
    """Feed one load per second; apply each decision; the replica count after each tick."""
    counts = []
    for i, load in enumerate(loads):
        decision = d.observe(start + i, load, replicas, requests=1 if load else 0)
        if decision is not None:
            replicas = decision
        counts.append(replicas)
    return counts


def test_wanted_is_load_over_target_clamped_to_the_range() -> None:
    d = decider()
    assert [d.wanted(x) for x in (0, 1, 2, 2.1, 4, 5, 100)] == [1, 1, 1, 2, 2, 3, 3]
    assert decider(min=0).wanted(0) == 1  # zero only by the idle rule


def test_scales_up_only_after_the_load_held_for_up_after() -> None:
    d = decider()
    # 6 in flight wants 3; held from t=0, so at t=3 (3 s of it) the decider moves.
    assert run(d, [6, 6, 6, 6, 6], 1) == [1, 1, 1, 3, 3]


def test_a_short_burst_starts_nothing() -> None:
    d = decider()
    assert run(d, [0, 0, 0, 0, 6, 6, 0, 0, 6, 0], 1) == [1] * 10


def test_up_starts_the_fewest_the_window_called_for() -> None:
    d = decider()
    # 4 in flight (2 replicas) then 6 (3): over the 3 s window the least wanted was 2.
    assert run(d, [4, 4, 4, 6, 6], 1)[3] == 2


def test_scales_down_only_after_down_after_and_does_not_flap() -> None:
    d = decider(up_after_s=0)
    counts = run(d, [6] * 3 + [0] * 12, 1)
    assert counts[:3] == [3, 3, 3]
    # Load dropped at t=3; down needs 10 s of "1 is enough": t=3..13 -> at t=13.
    assert counts[3:13] == [3] * 10
    assert counts[13] == 1
    # A load oscillating around the threshold keeps the higher count: no flapping.
    d = decider(up_after_s=0)
    counts = run(d, [6, 0] * 15, 1)
    assert set(counts) == {3}


def test_down_keeps_the_most_the_window_called_for() -> None:
    d = decider(up_after_s=0, down_after_s=4)
    counts = run(d, [6, 6, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0], 1)
    # 3 in flight wants 2: after 4 s of at most 2, down to 2; then to 1 after 4 s of 1.
    assert counts == [3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 1]


def test_to_zero_after_idle_and_back_at_once() -> None:
    d = decider(min=0, idle_to_zero_after_s=5)
    counts = run(d, [1, 0, 0, 0, 0, 0, 0, 0], 1)
    # Last request at t=0; idle for 5 s at t=5.
    assert counts == [1, 1, 1, 1, 1, 0, 0, 0]
    assert "no request" in d.reason
    # A request while at zero wakes the revision on the next tick, without waiting.
    assert d.observe(8, 1, 0) == 1
    assert d.observe(9, 0, 0) is None


def test_short_requests_between_ticks_keep_it_awake() -> None:
    d = decider(min=0, idle_to_zero_after_s=3)
    for t in range(10):
        # Never seen in flight, but a request arrived since the last tick.
        assert d.observe(t, 0, 1, requests=1) is None


def test_min_one_never_goes_to_zero() -> None:
    d = decider(idle_to_zero_after_s=1)
    assert run(d, [0] * 20, 1) == [1] * 20


def test_a_range_changed_under_it_is_followed_at_once() -> None:
    d = decider(min=2, max=3)
    assert d.observe(0, 0, 1) == 2
    d = decider(min=1, max=2)
    assert d.observe(0, 0, 3) == 2


def test_decisions_say_why() -> None:
    d = decider(up_after_s=0)
    d.observe(0, 6, 1)
    assert "in flight" in d.reason and "per replica" in d.reason


async def test_the_backend_scales_beside_running_replicas_and_keeps_the_group_at_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real supervision loops (of a program that cannot start: no model needed)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'vllm' program: replicas keep retrying
    backend = LocalBackend(logs_dir=tmp_path / "logs", health_interval_s=0.02)
    spec = ReplicaSpec(
        endpoint="e",
        model="m",
        version=1,
        runtime="vllm",
        task="chat",
        artifact_dir=tmp_path,
        artifact_digest="sha256:" + "a" * 64,
    )
    await backend.start()
    try:
        await backend.deploy(spec, 1, b"token")
        await asyncio.sleep(0.2)
        first = backend.status("e@r1")[0]
        assert first.restarts >= 1
        await backend.scale("e@r1", 3)
        assert [r.index for r in backend.status("e@r1")] == [0, 1, 2]
        # The running one was left alone: its restart count went on, it did not start over.
        assert backend.status("e@r1")[0].restarts >= first.restarts
        await backend.scale("e@r1", 1)
        assert [r.index for r in backend.status("e@r1")] == [0]
        await backend.scale("e@r1", 0)
        assert backend.status("e@r1") == []
        # Same spec again (a revision brought back) at zero: starts what it asks for.
        await backend.deploy(spec, 1, b"token")
        assert len(backend.status("e@r1")) == 1
        await backend.scale("e@r1", 2)
        await backend.deploy(spec, 1, b"token")  # the autoscaler's count is kept
        assert len(backend.status("e@r1")) == 2
    finally:
        await backend.close()
    assert backend.status("e@r1") == []
    await backend.scale("e@r1", 2)  # removed: nothing to scale, no error
    assert backend.status("e@r1") == []


def _route(*replicas: Upstream) -> Route:
    return Route(endpoint="e", model="m", version=1, metadata=b"{}", token=b"t", replicas=replicas)


async def test_a_request_waits_for_a_woken_revision_and_only_for_one() -> None:
    snapshot = RoutingSnapshot.of([Traffic.single(_route())])
    waker = Waker(lambda: snapshot)
    cold = snapshot.routes["e"].primary
    assert await waker.ready(cold) is cold  # nothing to wake it: answered as before (503)
    woken: list[tuple[str, str]] = []

    def refuse(endpoint: str, label: str) -> bool:
        woken.append((endpoint, label))
        return False

    waker.on_wake = refuse
    assert await waker.ready(cold) is cold  # the plane will not wake it: no wait either
    assert woken == [("e", "r1")]

    waker.on_wake = lambda endpoint, label: True
    waiting = asyncio.create_task(waker.ready(cold))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    assert waker.waiting == {("e", "r1"): 1}  # counted as load while it waits
    warm = _route(Upstream("127.0.0.1", 1))
    snapshot = RoutingSnapshot.of([Traffic.single(warm)])
    assert await asyncio.wait_for(waiting, 1) is warm
    assert waker.waiting == {}
    # The revision left routing while a request waited: it stops waiting (and gets a 503).
    snapshot = RoutingSnapshot.of([Traffic.single(_route())])
    waiting = asyncio.create_task(waker.ready(snapshot.routes["e"].primary))
    await asyncio.sleep(0.1)
    snapshot = RoutingSnapshot()
    assert (await asyncio.wait_for(waiting, 1)).replicas == ()
