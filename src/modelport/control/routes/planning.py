"""``/api/v1/plan``, ``/api/v1/hardware`` and ``/api/v1/endpoints/{name}/bench|profiles``:
readiness before a deploy, and measured profiles to plan with."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, Strict

from modelport.control import benchmarking as bench_service
from modelport.control import endpoints as endpoint_service
from modelport.control import planning as service
from modelport.control.benchmarking import BenchRunner
from modelport.control.deployment import Deployment
from modelport.control.deps import ActorDep, PlaneDep, SessionDep, audit_change
from modelport.control.plane import ControlPlane
from modelport.core.errors import Conflict, InvalidRequest
from modelport.core.intent import parse_duration, parse_intent
from modelport.governance.identity import Actor

router = APIRouter(tags=["planning"])

# Where the backend runs replicas: LocalBackend runs every one on this machine's CPUs.
_LOCAL_HARDWARE = "cpu"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanRequest(_In):
    intent: str = Field(description="The text of a modelport.yaml intent file.", max_length=65536)
    filename: str = Field(default="modelport.yaml", max_length=256)


class BenchRequest(_In):
    revision: str | None = Field(
        default=None,
        pattern=r"^r[1-9][0-9]{0,8}$",
        description="The revision to measure (rN); default: the stable one.",
    )
    concurrency: list[Annotated[int, Strict()]] | None = Field(
        default=None,
        max_length=64,
        description="Closed-loop callers per replica at each level; default 1, 2, 4, 8.",
    )
    open_loop: list[Annotated[float, Strict()]] | None = Field(
        default=None,
        max_length=64,
        description="After the levels: open-loop runs at these shares (0-1] of the top "
        "throughput; default 0.4, 0.55, 0.7; [] for none.",
    )
    rate: Annotated[float, Strict()] | None = Field(
        default=None,
        description="Instead of levels: one open-loop run at this many requests per second "
        "per replica, to check a plan's predicted p95; not stored as a profile.",
    )
    duration: Annotated[float, Strict()] | Annotated[str, Strict()] = Field(
        default=5.0,
        description="Seconds at each level, a number or a duration such as 3s or 500ms.",
    )


@router.get("/hardware")
async def hardware(plane: PlaneDep) -> list[dict[str, Any]]:
    """The hardware catalog: built-in types plus the installation's own, with sources."""
    catalog = await asyncio.to_thread(service.catalog_of, plane.settings)
    return [
        {
            **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)},
            "sources": dict(entry.sources),
        }
        for entry in catalog
    ]


@router.post("/plan")
async def plan(body: PlanRequest, plane: PlaneDep, actor: ActorDep) -> dict[str, Any]:
    """What the intent would run on and cost, whether policy allows it, and what it would
    change (``modelport plan``). Stores nothing."""

    def run() -> dict[str, Any]:
        intent = parse_intent(body.intent, filename=body.filename)
        with plane.db.session() as session:
            return service.plan_intent(
                session=session,
                settings=plane.settings,
                artifacts=plane.artifacts,
                policies=plane.policies,
                intent=intent,
                text=body.intent,
                filename=body.filename,
                actor=actor,
            )

    # Off the loop: YAML, the database and the GGUF header are blocking work.
    return await asyncio.to_thread(run)


def _runner(request: Request) -> BenchRunner:
    # One per server (its lock keeps benches from measuring each other), made on first use;
    # creating it on the loop, between awaits, cannot race.
    runner = getattr(request.app.state, "bench_runner", None)
    if runner is None:
        runner = request.app.state.bench_runner = BenchRunner()
    return runner


def _duration(value: float | str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(f"duration: {exc}", field="duration", param="duration") from None


def _traffic(plane: ControlPlane, name: str) -> tuple[int | None, int | None]:
    """The endpoint's intent's average tokens in and out (chat and completion samples)."""
    with plane.db.session() as session:
        row = endpoint_service.get_endpoint(session, name)
        traffic = (row.intent or {}).get("traffic") or {}
        return traffic.get("avg_input_tokens"), traffic.get("avg_output_tokens")


def _deployment(plane: ControlPlane, name: str, revision: str | None) -> Deployment:
    """The running revision to measure (on the loop: the plane's state lives there)."""
    running = plane.running(name)
    if not running:
        raise Conflict(
            f"endpoint '{name}' runs no revision right now: deploy it (or wait for it to "
            "start) before benching it"
        )
    stable = plane.stable(name)
    label = revision or (stable.label if stable is not None else sorted(running)[0])
    deployment = running.get(label)
    if deployment is None:
        raise InvalidRequest(
            f"revision: {label} of endpoint '{name}' is not running; running: "
            f"{', '.join(sorted(running))}",
            field="revision",
            param="revision",
        )
    if deployment.remote is not None:
        raise InvalidRequest(
            f"revision: {label} of endpoint '{name}' is an external server: there is no "
            "replica on this machine to measure",
            field="revision",
            param="revision",
        )
    return deployment


@router.post("/endpoints/{name}/bench", status_code=201)
async def bench(
    name: str,
    body: BenchRequest,
    request: Request,
    response: Response,
    plane: PlaneDep,
    actor: ActorDep,
) -> dict[str, Any]:
    """Measure a revision's replicas at each concurrency (``modelport bench``) and store the
    profile (201); with ``rate``, measure one open-loop run and store nothing (200). Bounded:
    at most 60 s."""
    plan = bench_service.check_plan(
        body.concurrency, _duration(body.duration), body.rate, body.open_loop
    )
    input_tokens, output_tokens = await asyncio.to_thread(_traffic, plane, name)  # 404 if none
    deployment = _deployment(plane, name, body.revision)
    targets = plane.backend.ready(deployment.spec.group)
    if not targets:
        raise Conflict(
            f"revision {deployment.label} of endpoint '{name}' has no ready replica: wait "
            "until it serves ('modelport endpoints show')"
        )
    sample = bench_service.sample_request(
        deployment, input_tokens=input_tokens, output_tokens=output_tokens
    )
    points = await _runner(request).run(targets, deployment.token, sample, plan)
    if plan.rate is not None:  # a check at one rate: what it measured, nothing stored
        response.status_code = 200
        machine = await asyncio.to_thread(bench_service.machine_facts)
        return bench_service.run_public(
            deployment, _LOCAL_HARDWARE, len(targets), plan, machine, points, sample
        )
    profile = await asyncio.to_thread(
        _store, plane, actor, deployment, len(targets), plan, points, sample
    )
    await audit_change(
        plane,
        request,
        actor,
        action="endpoints.bench",
        target=f"endpoint:{name}",
        after={"profile": profile["id"], "revision": deployment.label, "points": len(points)},
    )
    return profile


def _store(
    plane: ControlPlane,
    actor: Actor,
    deployment: Deployment,
    replicas: int,
    plan: bench_service.BenchPlan,
    points: list[dict[str, Any]],
    sample: bench_service.Sample,
) -> dict[str, Any]:
    machine = bench_service.machine_facts()
    with plane.db.session() as session:
        row = bench_service.store_profile(
            session,
            deployment=deployment,
            hardware=_LOCAL_HARDWARE,
            replicas=replicas,
            plan=plan,
            machine=machine,
            points=points,
            sample=sample,
            created_by=actor.name,
        )
        return bench_service.profile_public(row)


@router.get("/endpoints/{name}/profiles")
def profiles(name: str, session: SessionDep, _: ActorDep) -> list[dict[str, Any]]:
    """The endpoint's stored bench profiles, newest first."""
    endpoint_service.get_endpoint(session, name)  # 404 naming it
    return [bench_service.profile_public(row) for row in bench_service.list_profiles(session, name)]
