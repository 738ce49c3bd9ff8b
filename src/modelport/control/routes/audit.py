"""``/api/v1/audit``: read, export and verify the audit log (admin only)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.audit import AuditFilter, entry_dict
from modelport.control.deps import ActorDep, PlaneDep, SessionDep
from modelport.control.times import parse_time
from modelport.core.errors import Forbidden, InvalidRequest
from modelport.governance.audit_chain import Anchor
from modelport.governance.identity import Actor

router = APIRouter(prefix="/audit", tags=["audit"])

_MAX_FILTER = 255
_MAX_ANCHORS = 1_000_000


def _admin_only(actor: Actor) -> None:
    # The access table (control/access.py) says the same; checked here too so that the log
    # stays closed even where the guard is not in front of the app.
    if not actor.is_admin:
        raise Forbidden("the audit log is for admins only", permission="admin")


def _filter(
    actor: str | None,
    action: str | None,
    target: str | None,
    since: str | None,
    after: int = 0,
    limit: int | None = None,
) -> AuditFilter:
    for name, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None and (not value.strip() or len(value) > _MAX_FILTER):
            raise InvalidRequest(
                f"{name} must be 1 to {_MAX_FILTER} characters; got {value[:64]!r}", param=name
            )
    return AuditFilter(
        actor=actor,
        action=action,
        target=target,
        since=parse_time(since, "since", datetime.now(UTC)) if since is not None else None,
        after_seq=after,
        limit=limit,
    )


_ACTOR = Query(default=None, description="Exactly this actor (admin, a user, key:<id>, system).")
_ACTION = Query(
    default=None, description="This action (endpoints.apply), or a prefix ending in '.'."
)
_TARGET = Query(default=None, description="Exactly this target (endpoint:fraud, key:key_...).")
_SINCE = Query(default=None, description="90m, 24h, 7d, today, month or ISO 8601.")


@router.get("")
def list_audit(
    session: SessionDep,
    plane: PlaneDep,
    caller: ActorDep,
    actor: str | None = _ACTOR,
    action: str | None = _ACTION,
    target: str | None = _TARGET,
    since: str | None = _SINCE,
    after: int | None = Query(
        default=None, ge=0, description="Page forward: the entries after this seq."
    ),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Entries matching the filters, oldest first: the newest ``limit`` of them, or with
    ``after`` the first ``limit`` after that seq."""
    _admin_only(caller)
    query = _filter(actor, action, target, since, after or 0, limit)
    entries = plane.audit.entries(session, query, newest=after is None)
    return [entry_dict(entry) for entry in entries]


@router.get("/export")
def export_audit(
    plane: PlaneDep,
    caller: ActorDep,
    actor: str | None = _ACTOR,
    action: str | None = _ACTION,
    target: str | None = _TARGET,
    since: str | None = _SINCE,
) -> StreamingResponse:
    """Every matching entry as JSON lines, oldest first, streamed a page at a time."""
    _admin_only(caller)
    query = _filter(actor, action, target, since)

    # A sync generator: Starlette runs it in a worker thread, never on the event loop.
    def lines() -> Iterator[bytes]:
        for entry in plane.audit.stream(query):
            yield orjson.dumps(entry_dict(entry)) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class AnchorIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: int = Field(strict=True, ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    at: str = ""


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchors: list[AnchorIn] = Field(
        default_factory=list,
        max_length=_MAX_ANCHORS,
        description="Anchors kept elsewhere (a webhook receiver's), checked besides the "
        "anchor file's.",
    )


class ProblemOut(BaseModel):
    seq: int
    kind: str
    message: str


class VerifyResult(BaseModel):
    ok: bool
    checked: int = Field(description="Entries found sound before the first problem (all).")
    head: dict[str, Any]
    anchors: int = Field(description="Anchors the chain was checked against.")
    first_problem: ProblemOut | None


@router.post("/verify")
async def verify_audit(
    plane: PlaneDep, caller: ActorDep, body: VerifyRequest | None = None
) -> VerifyResult:
    """Recompute the whole chain; name the first entry altered, inserted or removed, or a
    truncated tail (against the head row and the anchors)."""
    _admin_only(caller)
    given = [Anchor(a.seq, a.hash, a.at) for a in (body.anchors if body else [])]

    def run() -> VerifyResult:
        anchors = [*plane.audit.anchors(), *given]
        result = plane.audit.verify(anchors)
        head = plane.audit.head()
        problem = result.first_problem
        return VerifyResult(
            ok=result.ok,
            checked=result.checked,
            head={"seq": head.seq, "hash": head.hash},
            anchors=len(anchors),
            first_problem=(
                ProblemOut(seq=problem.seq, kind=problem.kind, message=problem.message)
                if problem
                else None
            ),
        )

    # Reading the whole log is blocking I/O and hashing: in a thread.
    return await asyncio.to_thread(run)
