"""Control-plane transitions under faults and concurrency, in process: a real SQLite database,
real worker processes, the real API over ASGI, and faults injected between the steps of each
transition (a backend that cannot start a revision, a database write that fails once).

The SLO windows are fed here the way the gateway feeds them (``RevisionWindows.record`` on
the event loop), so a breach is certain and immediate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from modelport.backends import LocalBackend
from modelport.control import ControlPlane, RolloutController, create_control_app, registry
from modelport.control import rollouts as rollout_service
from modelport.control.schemas import VersionCreate
from modelport.core.replica import WORKER_TOKEN_HEADER
from modelport.core.routing import RoutingSnapshot
from modelport.core.settings import Settings
from modelport.core.usage import UsageRecord
from modelport.governance import SecretStore
from modelport.observability import RecentUsage, RevisionWindows, ShadowReports
from modelport.store import ArtifactStore, Database

pytestmark = pytest.mark.integration

MODEL = """
import os
import time


class Scorer:
    def __init__(self):
        while os.path.exists(FLAG):  # a revision that takes its time to start
            time.sleep(0.1)

    def predict(self, inputs):
        return {"score": inputs["features"].sum(axis=1)}
"""
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
HOLD = "strategy: canary\n  steps: [50, 100]\n  interval: 10m\n  min_requests: 1000"
BREACHABLE = "strategy: canary\n  steps: [50, 100]\n  interval: 10m\n  min_requests: 5"


def intent(endpoint: str, version: int, rollout: str = "strategy: immediate") -> str:
    return (
        f"endpoint: {endpoint}\ntask: custom\nmodel: scorer:{version}\n"
        f"slo:\n  max_error_rate: 0.05\nrollout:\n  {rollout}\n"
    )


@dataclass
class Stack:
    plane: ControlPlane
    controller: RolloutController
    windows: RevisionWindows
    shadows: ShadowReports
    usage: RecentUsage
    api: httpx.AsyncClient
    home: Path
    slow_flag: Path
    snapshots: list[RoutingSnapshot] = field(default_factory=list)

    async def apply(self, text: str) -> httpx.Response:
        return await self.api.post("/api/v1/apply", json={"intent": text})

    async def rollout(self, endpoint: str) -> dict[str, Any]:
        reply = await self.api.get(f"/api/v1/endpoints/{endpoint}/rollout")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    async def steer(self, endpoint: str, action: str) -> httpx.Response:
        return await self.api.post(f"/api/v1/endpoints/{endpoint}/rollout/{action}")

    async def wait(
        self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await predicate():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    async def wait_state(self, endpoint: str, *states: str, timeout: float = 60.0) -> None:
        async def reached() -> bool:
            return (await self.rollout(endpoint))["state"] in states

        await self.wait(reached, timeout, f"{endpoint} rollout {states}")

    async def wait_serving(self, endpoint: str, timeout: float = 60.0) -> None:
        async def serving() -> bool:
            reply = await self.api.get(f"/api/v1/endpoints/{endpoint}")
            return reply.status_code == 200 and reply.json()["status"] == "ready"

        await self.wait(serving, timeout, f"{endpoint} to serve")

    def shares(self, endpoint: str) -> dict[str, float]:
        return self.plane.traffic_shares(endpoint)


class FailOnce:
    """Wraps a function so that its next call (after ``arm``) raises."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.armed = False
        self.failed = 0

    def arm(self) -> None:
        self.armed = True

    @classmethod
    def armed_on(cls, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> FailOnce:
        """Replace ``owner.name`` for this test with a wrapper whose next call raises."""
        wrapper = cls(getattr(owner, name))
        monkeypatch.setattr(owner, name, wrapper)
        wrapper.arm()
        return wrapper

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.armed = False
            self.failed += 1
            raise RuntimeError("injected fault")
        return self.target(*args, **kwargs)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    home = tmp_path / "home"
    settings = Settings(home=home)
    (home / "logs").mkdir(parents=True)
    db = Database(settings.resolved_database_url)
    await asyncio.to_thread(db.migrate)
    windows, shadows, usage = RevisionWindows(), ShadowReports(), RecentUsage()
    snapshots: list[RoutingSnapshot] = []
    plane = ControlPlane(
        settings=settings,
        db=db,
        artifacts=ArtifactStore(settings.artifacts_dir),
        backend=LocalBackend(logs_dir=home / "logs", health_interval_s=0.1),
        admin_token="admin",
        publish_routes=snapshots.append,
        publish_keys=lambda _: None,
        usage=usage,
        secrets=SecretStore(home / "secrets"),
    )
    await plane.start()
    controller = RolloutController(plane, windows, shadows, tick_s=0.1, start_timeout_s=60)
    await controller.start()
    transport = httpx.ASGITransport(
        app=create_control_app(plane, controller), raise_app_exceptions=False
    )
    api = httpx.AsyncClient(
        transport=transport, base_url="http://control", headers={"authorization": "Bearer admin"}
    )
    code = tmp_path / "model"
    code.mkdir()
    slow_flag = tmp_path / "slow"
    (code / "model.py").write_text(MODEL.replace("FLAG", repr(str(slow_flag))))

    def register() -> None:
        with db.session() as session:
            registry.create_model(session, name="scorer", task="custom")
        for _ in range(3):
            plane.register_version(
                "scorer",
                VersionCreate(
                    runtime="python",
                    artifact_path=str(code),
                    runtime_options={"class": "model:Scorer"},
                    signature=SIGNATURE,
                ),
                created_by="test",
            )

    await asyncio.to_thread(register)
    try:
        yield Stack(plane, controller, windows, shadows, usage, api, home, slow_flag, snapshots)
    finally:
        await api.aclose()
        await controller.close()
        await plane.close()
        db.close()


async def infer_direct(stack: Stack, endpoint: str) -> int:
    """Call the serving revision's replica the way the gateway does: the published route's
    address and token."""
    route = stack.snapshots[-1].routes[endpoint].primary
    assert route.replicas, f"no ready replica of {route.label} is routed"
    upstream = route.replicas[0]
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"http://{upstream.host}:{upstream.port}/v2/models/{endpoint}/infer",
            json=BODY,
            headers={WORKER_TOKEN_HEADER.decode(): route.token.decode()},
        )
    return reply.status_code


async def serving_endpoint(stack: Stack, endpoint: str, version: int = 1) -> None:
    reply = await stack.apply(intent(endpoint, version))
    assert reply.status_code == 200 and reply.json()["action"] == "created", reply.text
    await stack.wait_serving(endpoint)


# -- shared state read from route threads ------------------------------------------------------


async def test_status_reads_while_the_loop_records(stack: Stack) -> None:
    """Sync routes (thread pool) read windows, shadow reports, replica states and recent usage
    while the loop records into them as the gateway does: every read answers 200."""
    await serving_endpoint(stack, "busy")
    assert (await stack.apply(intent("busy", 2, HOLD))).status_code == 200
    await stack.wait_state("busy", "progressing")
    stop = asyncio.Event()

    async def record() -> None:
        record = UsageRecord("id", "busy", "r2", "key", "p", None, 200, 1.0)
        while not stop.is_set():
            for _ in range(2000):
                stack.windows.record("busy", "r2", 1.0, 200)
                stack.windows.record("busy", "r1", 1.0, 200)
                stack.shadows.get("busy", "r2").add(
                    primary_status=200,
                    primary_latency_ms=1.0,
                    primary_body=b"{}",
                    primary_output_tokens=0,
                    shadow_status=200,
                    shadow_latency_ms=1.0,
                    shadow_body=b"{}",
                    shadow_output_tokens=0,
                )
                stack.usage.record(record)
            await asyncio.sleep(0)

    recorder = asyncio.create_task(record())
    statuses: list[int] = []
    deadline = time.monotonic() + 20
    try:
        paths = ["rollout", "rollouts", "revisions", ""]
        while len(statuses) < 120 and time.monotonic() < deadline:
            for path in paths:
                reply = await stack.api.get(f"/api/v1/endpoints/busy/{path}".rstrip("/"))
                statuses.append(reply.status_code)
            statuses.append((await stack.api.get("/api/v1/usage/recent?limit=1000")).status_code)
    finally:
        stop.set()
        await recorder
    assert len(statuses) >= 50 and set(statuses) == {200}, statuses
    assert (await stack.steer("busy", "abort")).status_code == 200


async def test_window_reads_from_a_thread_go_through_the_loop(stack: Stack) -> None:
    """Iterating a window from another thread while the loop appends to it raises 'deque
    mutated during iteration' (the original 500); the same read through ``on_loop`` never
    does."""
    windows = RevisionWindows(max_samples=300_000)
    for _ in range(300_000):
        windows.record("ep", "r1", 1.0, 200)

    async def race(read: Callable[[], object]) -> list[BaseException]:
        errors: list[BaseException] = []

        def reader() -> None:
            for _ in range(10):
                try:
                    read()
                except RuntimeError as exc:
                    errors.append(exc)

        thread = asyncio.create_task(asyncio.to_thread(reader))
        while not thread.done():
            for _ in range(500):
                windows.record("ep", "r1", 1.0, 200)
            await asyncio.sleep(0)
        await thread
        return errors

    direct = await race(lambda: windows.stats("ep", "r1", since=0.0))
    assert direct and "mutated during iteration" in str(direct[0])
    hopped = await race(lambda: stack.plane.on_loop(lambda: windows.stats("ep", "r1", 0.0)))
    assert hopped == []


# -- every transition completes or is undone ---------------------------------------------------


async def test_apply_that_cannot_start_a_new_endpoint_creates_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    FailOnce.armed_on(monkeypatch, stack.plane.backend, "deploy")
    failed = await stack.apply(intent("fresh", 1))
    assert failed.status_code == 503 and "could not be started" in failed.text, failed.text
    assert (await stack.api.get("/api/v1/endpoints/fresh")).status_code == 404
    assert "fresh" not in stack.plane.serving_names()
    await serving_endpoint(stack, "fresh")  # the same file, applied again, works
    assert await infer_direct(stack, "fresh") == 200


async def test_apply_whose_revision_cannot_start_is_rolled_back_not_stuck(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await serving_endpoint(stack, "ep")
    FailOnce.armed_on(monkeypatch, stack.plane.backend, "deploy")
    failed = await stack.apply(intent("ep", 2))
    assert failed.status_code == 503 and "r2 could not start" in failed.text, failed.text
    rollout = await stack.rollout("ep")
    assert rollout["state"] == "rolled_back" and "injected fault" in rollout["reason"]
    assert stack.shares("ep") == {"r1": 100.0} and set(stack.plane.running("ep")) == {"r1"}
    assert await infer_direct(stack, "ep") == 200
    again = await stack.apply(intent("ep", 2))  # not 409 "rollout in progress"
    assert again.status_code == 200 and again.json()["action"] == "rollout", again.text
    await stack.wait_state("ep", "promoted")
    assert stack.shares("ep") == {"r3": 100.0}


async def test_a_failed_step_write_leaves_traffic_where_the_database_says(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await serving_endpoint(stack, "ep")
    # The first write (pending -> step 1) fails.
    transition = FailOnce.armed_on(monkeypatch, rollout_service, "transition")
    assert (await stack.apply(intent("ep", 2, HOLD))).status_code == 200
    await stack.wait_state("ep", "progressing")
    assert transition.failed == 1  # it failed, and the next tick did it again
    rollout = await stack.rollout("ep")
    assert rollout["step"] == 0 and stack.shares("ep") == {"r1": 50.0, "r2": 50.0}


async def rollout_whose_next_write_fails(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoint ``ep`` mid-rollout (held at 50/50), its next rollout write armed to fail."""
    await serving_endpoint(stack, "ep")
    assert (await stack.apply(intent("ep", 2, HOLD))).status_code == 200
    await stack.wait_state("ep", "progressing")
    FailOnce.armed_on(monkeypatch, rollout_service, "transition")


async def test_a_failed_promote_changes_nothing_and_can_be_retried(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rollout_whose_next_write_fails(stack, monkeypatch)
    assert (await stack.steer("ep", "promote")).status_code == 500
    assert (await stack.rollout("ep"))["state"] == "progressing"
    assert stack.shares("ep") == {"r1": 50.0, "r2": 50.0}
    promoted = await stack.steer("ep", "promote")
    assert promoted.status_code == 200 and promoted.json()["state"] == "promoted"
    assert stack.shares("ep") == {"r2": 100.0}


async def test_a_rollback_whose_write_fails_is_recorded_later_not_lost(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rollout_whose_next_write_fails(stack, monkeypatch)
    assert (await stack.steer("ep", "rollback")).status_code == 500
    assert stack.shares("ep") == {"r1": 100.0}  # traffic first: back on r1 at once
    await stack.wait_state("ep", "rolled_back", timeout=10)  # the controller recorded it
    assert (await stack.rollout("ep"))["reason"] == "rolled back by admin"
    again = await stack.apply(intent("ep", 3))
    assert again.status_code == 200 and again.json()["action"] == "rollout", again.text


async def test_undo_inside_the_drain_grace_keeps_the_replicas_and_their_token(
    stack: Stack,
) -> None:
    await serving_endpoint(stack, "ep")
    assert (await stack.apply(intent("ep", 2))).status_code == 200
    await stack.wait_state("ep", "promoted")
    # At once, inside the grace period before r1's replicas drain.
    undone = await stack.steer("ep", "rollback")
    assert undone.status_code == 200 and undone.json()["state"] == "rolled_back", undone.text
    assert stack.shares("ep") == {"r1": 100.0}
    for _ in range(30):  # across the grace period: r1 keeps answering with its token
        assert await infer_direct(stack, "ep") == 200
        await asyncio.sleep(0.1)
    group = stack.plane.running("ep")["r1"].spec.group
    assert stack.plane.backend.ready(group)


async def test_undo_that_cannot_start_leaves_the_endpoint_as_it_was(stack: Stack) -> None:
    controller = stack.controller
    await serving_endpoint(stack, "ep")
    assert (await stack.apply(intent("ep", 2))).status_code == 200
    await stack.wait_state("ep", "promoted")
    await asyncio.sleep(2)  # r1 drained
    controller._start_timeout_s = 1.0
    flag = stack.slow_flag
    flag.touch()
    try:
        failed = await stack.steer("ep", "rollback")
    finally:
        flag.unlink()
    assert failed.status_code == 409 and "could not start" in failed.text, failed.text
    assert stack.shares("ep") == {"r2": 100.0} and set(stack.plane.running("ep")) == {"r2"}
    assert (await stack.rollout("ep"))["state"] == "promoted"
    controller._start_timeout_s = 60.0
    undone = await stack.steer("ep", "rollback")
    assert undone.status_code == 200 and undone.json()["state"] == "rolled_back", undone.text


# -- one endpoint's slow work never holds up another's ------------------------------------------


async def test_slow_undo_does_not_delay_another_endpoints_automatic_rollback(
    stack: Stack,
) -> None:
    await serving_endpoint(stack, "slow")
    await serving_endpoint(stack, "fast")
    assert (await stack.apply(intent("slow", 2))).status_code == 200
    await stack.wait_state("slow", "promoted")
    # The canary of 'fast' is up before 'slow' starts its revision (the same code is slow
    # to start for every endpoint while the flag exists).
    assert (await stack.apply(intent("fast", 2, BREACHABLE))).status_code == 200
    await stack.wait_state("fast", "progressing")
    await asyncio.sleep(2)  # r1 of 'slow' drained: undoing must start it again
    flag = stack.slow_flag
    flag.touch()
    try:
        undo = asyncio.create_task(stack.steer("slow", "rollback"))
        await stack.wait(lambda: _true(stack.controller._undoing), 10, "the undo to start")
        busy = await stack.apply(intent("slow", 3))
        assert busy.status_code == 409 and "rolling back to r1" in busy.text, busy.text

        breached = time.monotonic()
        for _ in range(20):
            stack.windows.record("fast", "r2", 5.0, 500)
        await stack.wait_state("fast", "rolled_back", timeout=5)
        assert time.monotonic() - breached < 5
        assert not undo.done()  # the slow one is still waiting for its revision
        assert "SLO breached" in (await stack.rollout("fast"))["reason"]
    finally:
        flag.unlink()
    undone = await undo
    assert undone.status_code == 200 and undone.json()["state"] == "rolled_back", undone.text
    assert stack.shares("slow") == {"r1": 100.0}


async def _true(value: Any) -> bool:
    return bool(value)


# -- no blocking I/O on the loop ---------------------------------------------------------------


async def test_a_slow_database_never_stalls_the_loop(stack: Stack) -> None:
    """Every statement takes 200 ms; the API calls that write (apply, keys, steering, uploads)
    take longer, but the loop the gateway shares keeps ticking."""
    await serving_endpoint(stack, "ep")

    def slow(*_: Any) -> None:
        time.sleep(0.2)

    event.listen(stack.plane.db.engine, "before_cursor_execute", slow)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    watch = asyncio.create_task(ticker())
    try:
        key = await stack.api.post("/api/v1/keys", json={"project": "default", "name": "slow-db"})
        assert key.status_code == 201, key.text
        revoked = await stack.api.delete(f"/api/v1/keys/{key.json()['id']}")
        assert revoked.status_code == 200, revoked.text
        assert (await stack.apply(intent("ep", 2, HOLD))).status_code == 200
        assert (await stack.steer("ep", "abort")).status_code == 200
        upload = await stack.api.post(
            "/api/v1/artifacts", params={"filename": "blob.bin"}, content=b"x" * (3 << 20)
        )
        assert upload.status_code == 201, upload.text
    finally:
        event.remove(stack.plane.db.engine, "before_cursor_execute", slow)
        stop.set()
        await watch
    assert max(gaps) < 0.15, f"the loop stalled {max(gaps):.3f} s"


async def test_create_endpoint_that_cannot_start_creates_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    FailOnce.armed_on(monkeypatch, stack.plane.backend, "deploy")
    body = {"name": "direct", "model": "scorer:1", "replicas": 1}
    failed = await stack.api.post("/api/v1/endpoints", json=body)
    assert failed.status_code == 503 and "not created" in failed.text, failed.text
    assert (await stack.api.get("/api/v1/endpoints/direct")).status_code == 404
    created = await stack.api.post("/api/v1/endpoints", json=body)
    assert created.status_code == 201, created.text


async def test_deleting_an_endpoint_while_its_undo_waits(stack: Stack) -> None:
    await serving_endpoint(stack, "ep")
    assert (await stack.apply(intent("ep", 2))).status_code == 200
    await stack.wait_state("ep", "promoted")
    await asyncio.sleep(2)  # r1 drained
    stack.slow_flag.touch()
    try:
        undo = asyncio.create_task(stack.steer("ep", "rollback"))
        await stack.wait(lambda: _true(stack.controller._undoing), 10, "the undo to start")
        assert (await stack.api.delete("/api/v1/endpoints/ep")).status_code == 204
        gone = await undo
        assert gone.status_code in (404, 409), gone.text
    finally:
        stack.slow_flag.unlink()
    assert "ep" not in stack.plane.serving_names() and not stack.controller._undoing
    await serving_endpoint(stack, "ep")  # the name is free again, and serves
    assert await infer_direct(stack, "ep") == 200
