"""``/api/v1/policies``: policies as code, versioned; and a dry run of an intent against them."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from modelport.control import registry
from modelport.control.deps import ActorDep, PlaneDep, audit_change
from modelport.control.environments import environment_of
from modelport.control.policies import PolicyPublic, intent_context
from modelport.core.errors import NotFound
from modelport.core.intent import parse_intent
from modelport.core.intent_yaml import MAX_INTENT_BYTES
from modelport.core.names import parse_model_ref
from modelport.store.tables import EndpointRow

router = APIRouter(prefix="/policies", tags=["policies"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyPut(_In):
    text: str = Field(description="The policy's YAML.", max_length=MAX_INTENT_BYTES)


class PolicyTest(_In):
    intent: str = Field(description="The text of a modelport.yaml.", max_length=MAX_INTENT_BYTES)
    stage: Literal["plan", "apply"] = "apply"
    filename: str = Field(default="modelport.yaml", max_length=256)


class RuleVerdictPublic(BaseModel):
    policy: str
    version: int
    mode: str
    rule: str
    outcome: str  # pass | skip | deny | approval
    message: str
    reasons: list[str]


class VerdictPublic(BaseModel):
    stage: str
    allowed: bool  # no enforce-mode rule denies (audit-mode denials are listed, not counted)
    rules: list[RuleVerdictPublic]


@router.put("/{name}")
async def put_policy(
    name: str, body: PolicyPut, plane: PlaneDep, actor: ActorDep, request: Request
) -> PolicyPublic:
    """Store a new version of the policy (enabled) and put it in force. A policy that does not
    parse, names an unknown field or operator: 422 naming the field and line, nothing stored."""
    stored = await asyncio.to_thread(plane.policies.put, name, body.text, actor=actor.name)
    await audit_change(
        plane,
        request,
        actor,
        action="policies.put",
        target=f"policy:{name}",
        after={"version": stored.version, "text": body.text},
    )
    return stored


@router.get("")
async def list_policies(plane: PlaneDep, _: ActorDep) -> list[PolicyPublic]:
    """Every policy, enabled or not, with its newest version."""
    return await asyncio.to_thread(plane.policies.list)


@router.get("/{name}")
async def show_policy(name: str, plane: PlaneDep, _: ActorDep) -> PolicyPublic:
    """One policy with every version (text, mode, who wrote it, when), oldest first."""
    return await asyncio.to_thread(plane.policies.show, name)


@router.delete("/{name}")
async def delete_policy(
    name: str, plane: PlaneDep, actor: ActorDep, request: Request
) -> PolicyPublic:
    """Disable the policy (a new, disabled version: its history stays). PUT enables it again."""
    disabled = await asyncio.to_thread(plane.policies.disable, name, actor=actor.name)
    await audit_change(
        plane,
        request,
        actor,
        action="policies.delete",
        target=f"policy:{name}",
        after={"version": disabled.version, "enabled": False},
    )
    return disabled


@router.post("/test")
async def test_policies(body: PolicyTest, plane: PlaneDep, actor: ActorDep) -> VerdictPublic:
    """Every rule's verdict on an intent file at ``plan`` or ``apply``; stores and records
    nothing (``modelport policy test``)."""

    def dry_run() -> dict[str, Any]:
        intent = parse_intent(body.intent, filename=body.filename)
        with plane.db.session() as session:
            try:
                version = registry.resolve(session, parse_model_ref(intent.model))
            except NotFound as exc:
                raise NotFound(f"model: {exc.message}", field="model") from exc
            exists = session.scalar(
                select(EndpointRow.id).where(EndpointRow.name == intent.endpoint)
            )
            context = intent_context(
                plane.policies,
                intent=intent.to_dict(),
                version=version,
                actor=actor,
                endpoint_exists=exists is not None,
                environment=environment_of(session, intent.to_dict()),
            )
        return plane.policies.dry_run(body.stage, context).to_dict()

    return VerdictPublic.model_validate(await asyncio.to_thread(dry_run))
