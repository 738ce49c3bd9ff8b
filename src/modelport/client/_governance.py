"""The client's governance calls: identity (teams, projects, users, roles), API keys,
policies, secrets, rate limits, budgets and the audit log. A mixin ``Client`` inherits, so
its methods stay where callers know them: ``Client(...).create_key(...)``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from modelport.client._http import HTTPCalls, refusal

__all__ = ["GovernanceCalls"]


class GovernanceCalls(HTTPCalls):
    """Who may do what, and at what cost: the calls an admin or a team owner makes."""

    # -- identity: teams, projects, users, roles --------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """Who this client's token is: name, kind, admin, teams (team -> role)."""
        return self._object("GET", "/api/v1/me")

    def create_team(self, name: str) -> dict[str, Any]:
        return self._object("POST", "/api/v1/teams", json={"name": name})

    def list_teams(self) -> list[dict[str, Any]]:
        """The teams this token holds a role on (every team for an admin)."""
        return self._list("GET", "/api/v1/teams")

    def get_team(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"/api/v1/teams/{_segment(name)}")

    def grant_role(self, team: str, user: str, role: str) -> dict[str, Any]:
        """Give ``user`` ``role`` (owner, deployer, viewer) on ``team``, replacing its role."""
        return self._object(
            "POST", f"/api/v1/teams/{_segment(team)}/members", json={"user": user, "role": role}
        )

    def revoke_role(self, team: str, user: str) -> None:
        self._call("DELETE", f"/api/v1/teams/{_segment(team)}/members/{_segment(user)}")

    def create_project(self, name: str, team: str) -> dict[str, Any]:
        return self._object("POST", "/api/v1/projects", json={"name": name, "team": team})

    def list_projects(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/projects")

    def create_user(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        """A new user; the answer's ``token`` is shown only this once."""
        return self._object("POST", "/api/v1/users", json={"name": name, "admin": admin})

    def list_users(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/users")

    def rotate_user_token(self, name: str) -> dict[str, Any]:
        """A new token for ``name`` (in the answer's ``token``); the old one stops at once."""
        return self._object("POST", f"/api/v1/users/{_segment(name)}/token")

    def disable_user(self, name: str) -> dict[str, Any]:
        return self._object("POST", f"/api/v1/users/{_segment(name)}/disable")

    # -- API keys ---------------------------------------------------------------------------

    def create_key(
        self,
        project: str,
        name: str,
        team: str = "",
        *,
        scopes: list[str] | None = None,
        expires_at: datetime | None = None,
        permissions: list[str] | None = None,
        customers: list[str] | None = None,
    ) -> dict[str, Any]:
        """A new API key of ``project``; the answer's ``key`` is shown only this once."""
        body: dict[str, Any] = {
            "project": project,
            "name": name,
            "team": team,
            "scopes": scopes or [],
            "permissions": permissions or [],
            "customers": customers or [],
        }
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return self._object("POST", "/api/v1/keys", json=body)

    def list_keys(self, project: str | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project else None
        return self._list("GET", "/api/v1/keys", params=params)

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._object("DELETE", f"/api/v1/keys/{key_id}")

    def rotate_key(self, key_id: str, *, grace: int = 3600) -> dict[str, Any]:
        """A new key with ``key_id``'s settings; the old one works ``grace`` seconds more."""
        return self._object("POST", f"/api/v1/keys/{key_id}/rotate", json={"grace": grace})

    # -- policies and secrets ---------------------------------------------------------------

    def put_policy(self, name: str, text: str | Path) -> dict[str, Any]:
        """Store a new version of a policy (its YAML, or a path to it) and put it in force."""
        if isinstance(text, Path):
            text = text.read_text()
        return self._object("PUT", f"/api/v1/policies/{name}", json={"text": text})

    def list_policies(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/policies")

    def policy(self, name: str) -> dict[str, Any]:
        """One policy with every version."""
        return self._object("GET", f"/api/v1/policies/{name}")

    def delete_policy(self, name: str) -> dict[str, Any]:
        """Disable a policy (its history stays; ``put_policy`` enables it again)."""
        return self._object("DELETE", f"/api/v1/policies/{name}")

    def test_policies(
        self, intent: str | Path, *, stage: str = "apply", filename: str | None = None
    ) -> dict[str, Any]:
        """Every policy rule's verdict on an intent file (a dry run: nothing stored)."""
        if isinstance(intent, Path):
            filename, intent = filename or intent.name, intent.read_text()
        body = {"intent": intent, "stage": stage, "filename": filename or "modelport.yaml"}
        return self._object("POST", "/api/v1/policies/test", json=body)

    def put_secret(self, name: str, value: str) -> None:
        """Store a credential for an external model server; it can never be read back."""
        self._call("PUT", f"/api/v1/secrets/{name}", json={"value": value})

    def list_secrets(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/secrets")

    def delete_secret(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/secrets/{name}")

    # -- limits and budgets -----------------------------------------------------------------

    def set_limit(
        self,
        kind: str,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        concurrency: int | None = None,
    ) -> dict[str, Any]:
        """Set (replace) the rate limits of one scope: ``kind`` is key, project, team,
        customer or endpoint; None leaves that kind unlimited."""
        body = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency}
        return self._object("PUT", f"/api/v1/limits/{kind}/{_segment(name)}", json=body)

    def list_limits(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every limit (set through the API, and by endpoint intents), or one kind's."""
        params = {"kind": kind} if kind else {}
        return self._list("GET", "/api/v1/limits", params=params)

    def delete_limit(self, kind: str, name: str) -> dict[str, Any]:
        """Remove the limits set through the API on one scope."""
        return self._object("DELETE", f"/api/v1/limits/{kind}/{_segment(name)}")

    def set_budget(
        self,
        kind: str,
        name: str,
        *,
        daily_usd: str | None = None,
        monthly_usd: str | None = None,
    ) -> dict[str, Any]:
        """Set (replace) the daily and monthly caps of one scope in USD (decimal strings);
        ``kind`` is key, project, team, customer or endpoint; None leaves a period uncapped."""
        body = {"daily_usd": daily_usd, "monthly_usd": monthly_usd}
        return self._object("PUT", f"/api/v1/budgets/{kind}/{_segment(name)}", json=body)

    def list_budgets(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every budget (or one kind's) with cap, spent, reserved, remaining and reset time
        per capped period."""
        params = {"kind": kind} if kind else {}
        return self._list("GET", "/api/v1/budgets", params=params)

    def delete_budget(self, kind: str, name: str) -> dict[str, Any]:
        """Remove the caps set through the API on one scope."""
        return self._object("DELETE", f"/api/v1/budgets/{kind}/{_segment(name)}")

    # -- audit ------------------------------------------------------------------------------

    def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit entries, oldest first: the newest ``limit`` matching, or the first ``limit``
        after seq ``after``. ``action`` may be a prefix ending in '.' (``rollouts.``)."""
        params = _present(actor=actor, action=action, target=target, since=since, after=after)
        return self._list("GET", "/api/v1/audit", params={**params, "limit": limit})

    def export_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: str | None = None,
    ) -> Iterator[bytes]:
        """Every matching audit entry as JSON lines (one ``bytes`` each, newline included),
        streamed: a log of any size is never held in memory."""
        params = _present(actor=actor, action=action, target=target, since=since)
        with self._http.stream("GET", "/api/v1/audit/export", params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise refusal(response)
            for line in response.iter_lines():
                if line:
                    yield line.encode() + b"\n"

    def verify_audit(self, anchors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Recompute the audit chain: ``ok``, ``checked`` and the ``first_problem`` (seq,
        kind: altered, inserted, removed or truncated, message). ``anchors`` ({seq, hash})
        kept elsewhere (a webhook's) are checked besides the server's anchor file."""
        return self._object("POST", "/api/v1/audit/verify", json={"anchors": anchors or []})


def _present(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def _segment(value: str) -> str:
    """``value`` as one URL path segment (customer names may hold any character)."""
    return urllib.parse.quote(value, safe="")
