"""Every control-plane route against every kind of caller, generated from the app's routes.

The table in control/access.py is checked against ``app.routes`` itself: a route without a
rule fails here (and is refused with 403 by the guard), and so does a rule for a route that no
longer exists. Then every route is called without a credential (401), and by each role: a
refusal must be 403, an allowed call must not be 401/403 (it may be another 4xx: the calls
carry no or dummy bodies). Calls a role is allowed to make that would change state are decided
by the guard alone, so that one role's call does not change what the next one sees.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelport.backends import LocalBackend
from modelport.control import RolloutController, create_control_app
from modelport.control import identity as identity_service
from modelport.control.access import RULES, Rule, api_routes
from modelport.control.app import ControlApp
from modelport.control.plane import ControlPlane
from modelport.core.errors import Forbidden, ModelportError
from modelport.core.settings import Settings
from modelport.governance import SecretStore, hash_secret
from modelport.governance.identity import grants
from modelport.observability import RecentUsage, RevisionWindows, ShadowReports
from modelport.store import ArtifactStore, Database
from modelport.store.tables import ApiKeyRow, EndpointRow, ModelRow, ModelVersionRow

ADMIN_TOKEN = "mpa_test-admin-token"
KEY = "mp_alpha-key-secret"
TEAM, OTHER = "alpha", "beta"
PROJECT = "alpha-p"

# What each path parameter is filled with: objects of team alpha, or dummies.
FILL = {
    "name": None,  # depends on the route: see _fill
    "team": TEAM,
    "user": "nobody",
    "key_id": "key_alpha",
    "version": "1",
    "alias": "champion",
    "action": "pause",
    "webhook_id": "wh_none",
}
QUERY = {"project": PROJECT, "endpoint": "alpha-ep"}
BODIES = {
    ("POST", "/api/v1/models"): {"name": "new-model", "task": "custom", "owner": TEAM},
    ("POST", "/api/v1/keys"): {"project": PROJECT, "name": "k"},
    ("POST", "/api/v1/apply"): {
        "intent": f"endpoint: alpha-ep\nproject: {PROJECT}\ntask: custom\nmodel: alpha-model:1\n"
    },
    ("POST", "/api/v1/plan"): {
        "intent": f"endpoint: alpha-ep\nproject: {PROJECT}\ntask: custom\nmodel: alpha-model:1\n"
    },
    ("POST", "/api/v1/compare"): {
        "intent": f"endpoint: alpha-ep\nproject: {PROJECT}\ntask: custom\nmodel: alpha-model:1\n",
        "candidates": ["alpha-model:1"],
        "eval": {"format": "csv", "text": "x,label\n1,0\n"},
    },
}
# The team a route's target belongs to when it is not alpha's (POST /endpoints: project
# default, team default).
TARGET_TEAM = {("POST", "/api/v1/endpoints"): "default"}
ROLES = ("none", "viewer", "deployer", "other-owner", "owner", "admin", "key")


@dataclass(frozen=True, slots=True)
class Control:
    app: ControlApp
    plane: ControlPlane
    tokens: dict[str, str]


def _routes(app: ControlApp) -> Iterator[tuple[str, str]]:
    return api_routes(app.app.routes)


def _seed(db: Database) -> dict[str, str]:
    tokens = {"admin": ADMIN_TOKEN, "key": KEY}
    with db.session() as session:
        for team in (TEAM, OTHER):
            identity_service.create_team(session, name=team)
        identity_service.create_project(session, name=PROJECT, team=TEAM)
        model = ModelRow(name="alpha-model", task="custom", owner=TEAM)
        session.add(model)
        session.flush()
        version = ModelVersionRow(
            model_id=model.id, version=1, runtime="python", artifact_digest="sha256:" + "0" * 64
        )
        session.add(version)
        session.flush()
        session.add(
            EndpointRow(
                name="alpha-ep",
                model_ref="alpha-model:1",
                version_id=version.id,
                intent={"endpoint": "alpha-ep", "project": PROJECT},
            )
        )
        session.add(
            ApiKeyRow(
                id="key_alpha",
                prefix=KEY[:11],
                key_hash=hash_secret(KEY),
                project=PROJECT,
                name="alpha",
                team=TEAM,
            )
        )
        roles = {"viewer": (TEAM, "viewer"), "deployer": (TEAM, "deployer")}
        roles |= {"owner": (TEAM, "owner"), "other-owner": (OTHER, "owner")}
        for role in ("none", *roles):
            _, token = identity_service.create_user(session, name=f"user-{role}")
            tokens[role] = token
            if role in roles:
                team, bound = roles[role]
                identity_service.grant_role(session, team=team, user=f"user-{role}", role=bound)
    return tokens


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[Control]:
    settings = Settings(home=tmp_path / "home")
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    tokens = _seed(db)
    plane = ControlPlane(
        settings=settings,
        db=db,
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        backend=LocalBackend(logs_dir=tmp_path / "logs"),
        admin_token=ADMIN_TOKEN,
        publish_routes=lambda _: None,
        publish_keys=lambda _: None,
        usage=RecentUsage(),
        secrets=SecretStore(tmp_path / "secrets"),
    )
    await plane.identities.refresh()
    app = create_control_app(plane, RolloutController(plane, RevisionWindows(), ShadowReports()))
    yield Control(app, plane, tokens)
    db.close()


def _fill(method: str, template: str) -> str:
    def value(match: re.Match[str]) -> str:
        param = match.group(1)
        if param != "name":
            return FILL.get(param) or "dummy"
        if template.startswith("/api/v1/models"):
            return "alpha-model"
        if template.startswith("/api/v1/endpoints"):
            return "alpha-ep"
        return "dummy"

    return re.sub(r"\{(\w+)\}", value, template)


def _allowed(rule: Rule, role: str, team: str | None) -> bool:
    """What the table says ``role`` may do, given the team the target belongs to (None: any
    team will do)."""
    if role == "admin":
        return True
    if role == "key":
        return rule.keys
    if rule.permission == "authenticated":
        return True
    if rule.permission == "admin":
        return False
    held = {
        "none": {},
        "viewer": {TEAM: "viewer"},
        "deployer": {TEAM: "deployer"},
        "owner": {TEAM: "owner"},
        "other-owner": {OTHER: "owner"},
    }[role]
    if team is None:
        return any(grants(r, rule.permission) for r in held.values())
    return grants(held.get(team), rule.permission)


def _team_of(rule: Rule, method: str, template: str) -> str | None:
    if rule.team_of is None:
        return None
    return TARGET_TEAM.get((method, template), TEAM)


def test_every_route_has_a_rule_and_every_rule_a_route(control: Control) -> None:
    routes = set(_routes(control.app))
    assert routes, "no routes found"
    missing = sorted(routes - RULES.keys())
    assert not missing, f"routes without an access rule in control/access.py: {missing}"
    stale = sorted(RULES.keys() - routes)
    assert not stale, f"access rules for routes that do not exist: {stale}"


async def test_every_route_without_a_credential_is_401(control: Control) -> None:
    transport = httpx.ASGITransport(app=control.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:
        for method, template in _routes(control.app):
            reply = await http.request(method, _fill(method, template), params=QUERY)
            assert reply.status_code == 401, (method, template, reply.text)
        # A wrong credential counts against the address: past the limit (20 a minute) every
        # request from it is refused with 429, whatever it presents.
        statuses = []
        for method, template in _routes(control.app):
            bad = await http.request(
                method, _fill(method, template), headers={"authorization": "Bearer nope"}
            )
            statuses.append(bad.status_code)
        limit = control.plane.settings.auth_failures_per_minute
        assert statuses == [401] * limit + [429] * (len(statuses) - limit)
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await http.get("/api/v1/me", headers=admin)).status_code == 429


@pytest.mark.parametrize("role", ROLES)
async def test_every_route_for_every_role(control: Control, role: str) -> None:
    headers = {"authorization": f"Bearer {control.tokens[role]}"}
    transport = httpx.ASGITransport(app=control.app)
    guard = control.app.guard
    checked = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:
        for method, template in _routes(control.app):
            rule = RULES[(method, template)]
            allowed = _allowed(rule, role, _team_of(rule, method, template))
            path = _fill(method, template)
            body = BODIES.get((method, template))
            if allowed and method != "GET":
                # Decided by the guard only: running it would change what later calls see.
                verdict = await _guard_verdict(guard, method, path, headers, body)
                assert verdict is None, (role, method, template, verdict)
            else:
                reply = await http.request(method, path, params=QUERY, headers=headers, json=body)
                if allowed:
                    assert reply.status_code not in (401, 403), (role, method, template, reply.text)
                    assert reply.status_code != 500, (role, method, template, reply.text)
                else:
                    assert reply.status_code == 403, (role, method, template, reply.text)
            checked += 1
    assert checked == len(RULES)


async def _guard_verdict(
    guard: object, method: str, path: str, headers: dict[str, str], body: object
) -> str | None:
    """The guard's refusal of a request (its message), or None if it lets it through."""
    import orjson

    from modelport.control.guard import AccessGuard

    assert isinstance(guard, AccessGuard)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": "&".join(f"{k}={v}" for k, v in QUERY.items()).encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
    }
    try:
        scope = await guard.authenticate(scope)
        matched = guard.match(scope)
        assert matched is not None, path
        await guard.authorize(scope, matched, orjson.dumps(body) if body is not None else b"")
    except ModelportError as exc:
        assert isinstance(exc, Forbidden), exc
        return exc.message
    return None


async def test_a_route_missing_from_the_table_is_refused(control: Control) -> None:
    @control.app.app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {"open": "yes"}

    transport = httpx.ASGITransport(app=control.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:
        for role in ("owner", "admin"):
            headers = {"authorization": f"Bearer {control.tokens[role]}"}
            reply = await http.get("/api/v1/forgotten", headers=headers)
            assert reply.status_code == 403, reply.text
            assert "no access rule" in reply.json()["error"]["message"]


async def test_lists_show_only_the_callers_teams(control: Control) -> None:
    transport = httpx.ASGITransport(app=control.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:

        async def names(role: str, path: str) -> list[str]:
            headers = {"authorization": f"Bearer {control.tokens[role]}"}
            reply = await http.get(path, headers=headers)
            assert reply.status_code == 200, reply.text
            return [item["name"] for item in reply.json()]

        assert await names("viewer", "/api/v1/teams") == [TEAM]
        assert await names("other-owner", "/api/v1/teams") == [OTHER]
        assert await names("none", "/api/v1/teams") == []
        assert await names("admin", "/api/v1/teams") == [TEAM, OTHER, "default"]
        assert await names("viewer", "/api/v1/projects") == [PROJECT]
        assert await names("other-owner", "/api/v1/projects") == []
        assert await names("viewer", "/api/v1/endpoints") == ["alpha-ep"]
        assert await names("other-owner", "/api/v1/endpoints") == []
        assert await names("admin", "/api/v1/endpoints") == ["alpha-ep"]


async def test_a_key_reads_only_its_own_projects_usage(control: Control) -> None:
    transport = httpx.ASGITransport(app=control.app)
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:
        own = await http.get("/api/v1/usage", params={"project": PROJECT}, headers=headers)
        assert own.status_code == 200, own.text
        other = await http.get("/api/v1/usage", params={"project": "default"}, headers=headers)
        assert other.status_code == 403, other.text
        assert other.json()["error"]["details"]["field"] == "project"
        # A repeated parameter means to the guard what it means to the route (the last one).
        twice = await http.get(
            "/api/v1/usage", params=[("project", PROJECT), ("project", "default")], headers=headers
        )
        assert twice.status_code == 403, twice.text
        unnamed = await http.get("/api/v1/costs", headers=headers)
        assert unnamed.status_code == 403, unnamed.text
        endpoints = await http.get("/api/v1/endpoints", headers=headers)
        assert endpoints.status_code == 403, endpoints.text
    # Every refusal was queued for the audit log (written in batches, here at once).
    assert control.plane.audit.flush() == 4


# POST routes that change nothing (a dry run, a check): the only writes a reader may call.
READ_ONLY_POSTS = {"/api/v1/policies/test", "/api/v1/audit/verify", "/api/v1/plan"}


def test_no_change_is_open_to_readers(control: Control) -> None:
    for method, template in _routes(control.app):
        rule = RULES[(method, template)]
        if method != "GET" and template not in READ_ONLY_POSTS:
            assert rule.permission in ("deploy", "manage", "admin"), (method, template, rule)
            assert not rule.keys, (method, template)


async def test_users_made_by_another_server_are_seen_within_max_age(control: Control) -> None:
    # Another server sharing the database creates a user: this one has not been told.
    with control.plane.db.session() as session:
        _, token = identity_service.create_user(session, name="elsewhere")
        identity_service.grant_role(session, team=TEAM, user="elsewhere", role="viewer")
    control.plane.identities.max_age_s = 0.0
    transport = httpx.ASGITransport(app=control.app)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:
        first = await http.get("/api/v1/me", headers=headers)
        for _ in range(100):  # the request started a background reload; it takes a moment
            reply = await http.get("/api/v1/me", headers=headers)
            if reply.status_code == 200:
                break
            await asyncio.sleep(0.02)
    assert first.status_code == 401
    assert reply.status_code == 200, reply.text
    assert reply.json()["teams"] == {TEAM: "viewer"}
