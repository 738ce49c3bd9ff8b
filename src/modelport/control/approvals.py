"""Promotion under policies: the ``promote`` check, and four-eyes approvals of a rollout.

A promotion that a policy refuses, or that waits for a second person's approval, pauses the
rollout with the reason (``pause_for``) rather than rolling it back. ``record_approval``
stores an approval by anyone but the rollout's starter. Each function runs in a database
session (in a thread): the controller holds the endpoint's lock around them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control import rollouts as rollout_service
from modelport.control.policies import Policies, promote_context
from modelport.core.enums import RolloutState
from modelport.core.errors import Conflict
from modelport.governance.identity import Actor
from modelport.governance.policy import PolicyDenied, RuleVerdict, Verdict, evaluate
from modelport.store.policy_tables import RolloutApprovalRow
from modelport.store.tables import RolloutRow

__all__ = ["pause_for", "promotion_verdict", "record_approval"]

# Events that say why a rollout last paused; restarts and approvals are not among them.
_PAUSES = ("awaiting_approval", "policy_denied", "paused", "analysis")


def promotion_verdict(
    policies: Policies, session: Session, rollout_id: int, actor: Actor, *, enforce: bool
) -> Verdict:
    """The policies' verdict on promoting the rollout now; with ``enforce``, a denial or a
    missing approval raises ``PolicyDenied`` (403) naming the rule."""
    rollout = rollout_service.get_rollout(session, rollout_id)
    context = promote_context(policies, session, rollout, actor)
    return policies.check(
        "promote", context, actor, target=f"endpoint:{rollout.endpoint.name}", enforce=enforce
    )


def pause_for(
    session: Session, rollout_id: int, blocking: list[RuleVerdict], why: str, data: dict[str, Any]
) -> str:
    """Pause the rollout because of ``blocking`` (denials, or approvals still missing), with
    the reason on the rollout and in its events; returns the reason."""
    rollout = rollout_service.get_rollout(session, rollout_id)
    first = blocking[0]
    named = f"policy '{first.policy}' rule '{first.rule}'"
    if first.outcome == "approval":
        event = "awaiting_approval"
        message = (
            f"{why}; waiting for approval by someone other than "
            f"{rollout.created_by or 'its starter'} ({named}): modelport rollout approve "
            f"{rollout.endpoint.name}"
        )
    else:
        event = "policy_denied"
        reasons = f" ({'; '.join(first.reasons)})" if first.reasons else ""
        message = f"{why}; promotion refused by {named}{reasons}: {first.message}"
    details = {**data, "policy": [r.to_dict() for r in blocking]}
    rollout_service.transition(
        session, rollout, RolloutState.PAUSED, event=event, message=message, data=details
    )
    rollout.reason = message  # shown by 'modelport rollout status' while it waits
    return message


def record_approval(policies: Policies, session: Session, rollout_id: int, actor: Actor) -> bool:
    """Store ``actor``'s approval of the rollout's promotion; True when the rollout is paused
    waiting for it (the caller then promotes). Refuses its starter (403 naming the four-eyes
    rule) and a rollout no policy asks an approval for (409); approving twice adds nothing."""
    rollout = rollout_service.get_rollout(session, rollout_id)
    context = promote_context(policies, session, rollout, actor)
    context["rollout"]["approved_by"] = []  # which rules ask for an approval at all
    needed = [
        r for r in evaluate(policies.active, "promote", context).rules if r.outcome == "approval"
    ]
    if not needed:
        raise Conflict(
            f"no policy asks for an approval of the rollout of '{rollout.endpoint.name}': "
            "promote it, or let it finish",
            state=rollout.state,
        )
    if actor.name == rollout.created_by:
        rule = needed[0]
        raise PolicyDenied(
            f"four-eyes: {actor.name} started this rollout and cannot approve its promotion "
            f"(policy '{rule.policy}' rule '{rule.rule}'): {rule.message}",
            policy=rule.policy,
            rule=rule.rule,
            comply=rule.message,
            stage="promote",
            started_by=rollout.created_by,
        )
    exists = session.scalar(
        select(RolloutApprovalRow.id).where(
            RolloutApprovalRow.rollout_id == rollout.id, RolloutApprovalRow.actor == actor.name
        )
    )
    if exists is None:
        session.add(RolloutApprovalRow(rollout_id=rollout.id, actor=actor.name))
        rollout_service.add_event(
            session,
            rollout,
            "approved",
            f"promotion approved by {actor.name} (policy '{needed[0].policy}' rule "
            f"'{needed[0].rule}')",
        )
    return rollout.state == RolloutState.PAUSED and _last_pause(rollout) == "awaiting_approval"


def _last_pause(rollout: RolloutRow) -> str | None:
    return next((e.kind for e in reversed(rollout.events) if e.kind in _PAUSES), None)
