"""Who may call which control-plane route: ONE table, enforced by the guard in app.py.

Every ``(method, path template)`` of the control app maps to a ``Rule``: the permission it
needs and how to find the team that permission must be held on (``team_of``). Per team,
``viewer`` may ``read``, ``deployer`` may ``read`` and ``deploy``, ``owner`` may also
``manage`` (grant roles, create keys, delete); ``admin`` routes are the installation's
(secrets, prices, webhooks, users, teams, ...). A route missing from the table is refused
with 403, so a new route cannot be left open by forgetting it; ``tests/unit/test_access.py``
walks the app's routes against this table.

How a target finds its team: an endpoint by its intent's project (``default`` without one),
that project by its row; a model by its ``owner`` when that names a team, else ``default``;
a key by its project. List routes need the permission on at least one team (``ANY``) and
show only what the caller may read; usage and cost reports need a ``project=`` or ``team=``
filter the caller may read (an API key: its own ``project=``). A target that does not exist
resolves to ``ANY``, so that the route answers 404 to whoever could have seen it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute, compile_path

from modelport.control import identity
from modelport.core.errors import Forbidden, InvalidRequest, ModelportError, NotFound
from modelport.core.intent import parse_intent
from modelport.governance.identity import Actor
from modelport.store.identity_tables import TeamRow
from modelport.store.tables import ApiKeyRow, EndpointRow, ModelRow

__all__ = [
    "ANY",
    "RULES",
    "RouteTable",
    "Rule",
    "Target",
    "api_routes",
    "endpoint_project",
    "endpoint_team",
    "model_team",
    "rule_for",
]


@dataclass(frozen=True, slots=True)
class Target:
    """What a rule's ``team_of`` may look at: the route's path parameters, the query, and
    (for rules that say ``body``) the request body, already read and bounded by the guard."""

    path: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes = b""

    def json(self) -> dict[str, object]:
        try:
            value = orjson.loads(self.body) if self.body else {}
        except orjson.JSONDecodeError:
            return {}  # the route answers the malformed body itself
        return value if isinstance(value, dict) else {}


# None: the caller needs the permission on some team, whichever (list routes, or a target
# that does not exist, which the route then answers with 404).
ANY: None = None
Teams = frozenset[str] | None
TeamOf = Callable[[Session, Target], Teams]
Permission = Literal["authenticated", "read", "deploy", "manage", "admin"]


@dataclass(frozen=True, slots=True)
class Rule:
    """``permission`` on the team(s) ``team_of`` finds (all of them). ``authenticated``: any
    signed-in person; ``admin``: the installation. ``keys``: an API key may call it, only
    with ``project=`` its own project (read-only usage and cost reports)."""

    permission: Permission
    team_of: TeamOf | None = None
    body: bool = False  # team_of reads the body: decided once it has been read
    keys: bool = False
    note: str = field(default="", compare=False)


# -- how targets find their teams --------------------------------------------------------------


def endpoint_project(row: EndpointRow) -> str:
    """The project an endpoint belongs to: its intent's, or ``default``."""
    project = (row.intent or {}).get("project")
    return project if isinstance(project, str) and project else identity.DEFAULT


def endpoint_team(session: Session, name: str) -> str | None:
    """The team of endpoint ``name``; None if there is no such endpoint."""
    row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
    return None if row is None else _project_team(session, endpoint_project(row))


def model_team(session: Session, owner: str) -> str:
    """The team a model with this ``owner`` belongs to: that team if it exists, else default."""
    if owner and session.scalar(select(TeamRow.name).where(TeamRow.name == owner)):
        return owner
    return identity.DEFAULT


def _project_team(session: Session, project: str) -> str | None:
    try:
        return identity.project_team(session, project)
    except NotFound:
        return None


def _one(team: str | None) -> Teams:
    return ANY if team is None else frozenset({team})


def _endpoint(param: str) -> TeamOf:
    def team_of(session: Session, target: Target) -> Teams:
        return _one(endpoint_team(session, target.path.get(param, "")))

    return team_of


def _model(session: Session, target: Target) -> Teams:
    owner = session.scalar(select(ModelRow.owner).where(ModelRow.name == target.path["name"]))
    return ANY if owner is None else frozenset({model_team(session, owner)})


def _new_model(session: Session, target: Target) -> Teams:
    owner = target.json().get("owner", "")
    return frozenset({model_team(session, owner if isinstance(owner, str) else "")})


def _team_param(session: Session, target: Target) -> Teams:
    return frozenset({target.path["team"]})


def _key(session: Session, target: Target) -> Teams:
    project = session.scalar(select(ApiKeyRow.project).where(ApiKeyRow.id == target.path["key_id"]))
    return ANY if project is None else _one(_project_team(session, project))


def _new_key(session: Session, target: Target) -> Teams:
    project = target.json().get("project")
    if not isinstance(project, str):
        return ANY  # the route says what is wrong with the body
    return frozenset({_known_project(session, project)})


def _known_project(session: Session, project: str) -> str:
    try:
        return identity.project_team(session, project)
    except NotFound as exc:
        raise InvalidRequest(exc.message, field="project", param="project") from None


def _new_endpoint(session: Session, target: Target) -> Teams:
    # POST /endpoints takes no intent: the endpoint belongs to project default.
    return frozenset({_known_project(session, identity.DEFAULT)})


def _apply(session: Session, target: Target) -> Teams:
    """The intent's project's team, and the team of the endpoint it changes if that exists
    (moving an endpoint to another project needs deploy on both)."""
    body = target.json()
    text, filename = body.get("intent"), body.get("filename", "modelport.yaml")
    if not isinstance(text, str) or not isinstance(filename, str):
        return ANY
    try:
        intent = parse_intent(text, filename=filename)
    except ModelportError:
        return ANY  # the route answers the invalid intent, naming its field
    teams = {_known_project(session, intent.project)}
    current = endpoint_team(session, intent.endpoint)
    if current is not None:
        teams.add(current)
    return frozenset(teams)


def _report_scope(session: Session, target: Target) -> Teams:
    """Usage and cost reports: the team of ``project=``, or ``team=``; one is required."""
    project, team = target.query.get("project"), target.query.get("team")
    if project:
        return frozenset({_known_project(session, project)})
    if team:
        return frozenset({team})
    raise Forbidden(
        "name the project or team to report on (?project=NAME or ?team=NAME): only an admin "
        "may see every team's usage",
        field="project",
    )


def _query_endpoint(session: Session, target: Target) -> Teams:
    name = target.query.get("endpoint")
    if not name:
        raise Forbidden("name the endpoint (?endpoint=NAME): only an admin sees every alert")
    return _one(endpoint_team(session, name))


def _query_endpoint_if_named(session: Session, target: Target) -> Teams:
    """``?endpoint=NAME``: that endpoint's team; none named: any team (the answer lists only
    what the caller may read)."""
    name = target.query.get("endpoint")
    return _one(endpoint_team(session, name)) if name else ANY


# -- the table -----------------------------------------------------------------------------------

P = "/api/v1"
_ADMIN = Rule("admin")
_SIGNED_IN = Rule("authenticated")


def _read_any() -> Rule:
    return Rule("read", note="any team the caller reads; the list shows only those")


RULES: Mapping[tuple[str, str], Rule] = {
    ("GET", f"{P}/openapi.json"): _SIGNED_IN,
    ("GET", f"{P}/me"): _SIGNED_IN,
    # artifacts are content-addressed blobs of no team: uploading needs deploy on some team
    ("POST", f"{P}/artifacts"): Rule("deploy"),
    # models: the registry is shared for reading; changes need the owner team's permission
    ("POST", f"{P}/models"): Rule("deploy", _new_model, body=True),
    ("GET", f"{P}/models"): _read_any(),
    ("GET", f"{P}/models/{{name}}"): Rule("read"),
    ("DELETE", f"{P}/models/{{name}}"): Rule("manage", _model),
    ("POST", f"{P}/models/{{name}}/versions"): Rule("deploy", _model),
    ("GET", f"{P}/models/{{name}}/versions/{{version}}"): Rule("read"),
    ("DELETE", f"{P}/models/{{name}}/versions/{{version}}"): Rule("manage", _model),
    ("PUT", f"{P}/models/{{name}}/aliases/{{alias}}"): Rule("deploy", _model),
    ("DELETE", f"{P}/models/{{name}}/aliases/{{alias}}"): Rule("deploy", _model),
    # endpoints and their rollouts: the endpoint's project's team
    ("POST", f"{P}/endpoints"): Rule("deploy", _new_endpoint),
    ("GET", f"{P}/endpoints"): _read_any(),
    ("GET", f"{P}/endpoints/{{name}}"): Rule("read", _endpoint("name")),
    ("DELETE", f"{P}/endpoints/{{name}}"): Rule("manage", _endpoint("name")),
    ("POST", f"{P}/apply"): Rule("deploy", _apply, body=True),
    ("GET", f"{P}/endpoints/{{name}}/rollout"): Rule("read", _endpoint("name")),
    ("GET", f"{P}/endpoints/{{name}}/rollouts"): Rule("read", _endpoint("name")),
    ("POST", f"{P}/endpoints/{{name}}/rollout/{{action}}"): Rule("deploy", _endpoint("name")),
    ("GET", f"{P}/endpoints/{{name}}/revisions"): Rule("read", _endpoint("name")),
    ("GET", f"{P}/endpoints/{{name}}/drift"): Rule("read", _endpoint("name")),
    ("GET", f"{P}/endpoints/{{name}}/slo"): Rule("read", _endpoint("name")),
    # keys: held by a project; creating and revoking credentials is the owners'
    ("POST", f"{P}/keys"): Rule("manage", _new_key, body=True),
    ("GET", f"{P}/keys"): _read_any(),
    ("DELETE", f"{P}/keys/{{key_id}}"): Rule("manage", _key),
    ("POST", f"{P}/keys/{{key_id}}/rotate"): Rule("manage", _key),
    # usage and cost: per project or team; an API key sees its own project's
    ("GET", f"{P}/usage"): Rule("read", _report_scope, keys=True),
    ("GET", f"{P}/usage/events"): Rule("read", _report_scope, keys=True),
    ("GET", f"{P}/usage/recent"): _ADMIN,
    ("GET", f"{P}/costs"): Rule("read", _report_scope, keys=True),
    ("GET", f"{P}/alerts"): Rule("read", _query_endpoint),
    # installation-wide
    ("PUT", f"{P}/secrets/{{name}}"): _ADMIN,
    ("GET", f"{P}/secrets"): _ADMIN,
    ("DELETE", f"{P}/secrets/{{name}}"): _ADMIN,
    ("POST", f"{P}/prices"): _ADMIN,
    ("GET", f"{P}/prices"): _SIGNED_IN,
    ("POST", f"{P}/alerts/webhooks"): _ADMIN,
    ("GET", f"{P}/alerts/webhooks"): _ADMIN,
    ("DELETE", f"{P}/alerts/webhooks/{{webhook_id}}"): _ADMIN,
    # rate limits: operators set them installation-wide; anyone signed in may read them
    ("PUT", f"{P}/limits/{{kind}}/{{name}}"): _ADMIN,
    ("GET", f"{P}/limits"): _SIGNED_IN,
    ("DELETE", f"{P}/limits/{{kind}}/{{name}}"): _ADMIN,
    # budgets: operators set them; what each scope spent is the installation's money: admin
    ("PUT", f"{P}/budgets/{{kind}}/{{name}}"): _ADMIN,
    ("GET", f"{P}/budgets"): _ADMIN,
    ("DELETE", f"{P}/budgets/{{kind}}/{{name}}"): _ADMIN,
    # policies: installation-wide; anyone signed in may read them and dry-run an intent
    ("PUT", f"{P}/policies/{{name}}"): _ADMIN,
    ("GET", f"{P}/policies"): _SIGNED_IN,
    ("GET", f"{P}/policies/{{name}}"): _SIGNED_IN,
    ("DELETE", f"{P}/policies/{{name}}"): _ADMIN,
    ("POST", f"{P}/policies/test"): _SIGNED_IN,
    # the audit log (E): installation-wide
    ("GET", f"{P}/audit"): _ADMIN,
    ("GET", f"{P}/audit/export"): _ADMIN,
    ("POST", f"{P}/audit/verify"): _ADMIN,
    # identity
    ("POST", f"{P}/teams"): _ADMIN,
    ("GET", f"{P}/teams"): _SIGNED_IN,  # shows the caller's teams
    ("GET", f"{P}/teams/{{team}}"): Rule("read", _team_param),
    ("POST", f"{P}/teams/{{team}}/members"): Rule("manage", _team_param),
    ("DELETE", f"{P}/teams/{{team}}/members/{{user}}"): Rule("manage", _team_param),
    ("POST", f"{P}/projects"): _ADMIN,
    ("GET", f"{P}/projects"): _SIGNED_IN,  # shows the projects of the caller's teams
    ("POST", f"{P}/users"): _ADMIN,
    ("GET", f"{P}/users"): _ADMIN,
    ("POST", f"{P}/users/{{name}}/token"): _ADMIN,
    ("POST", f"{P}/users/{{name}}/disable"): _ADMIN,
    # environments and the hardware catalog: the installation's; anyone signed in may read
    ("POST", f"{P}/environments"): _ADMIN,
    ("GET", f"{P}/environments"): _SIGNED_IN,
    ("GET", f"{P}/environments/{{name}}"): _SIGNED_IN,
    ("PUT", f"{P}/environments/{{name}}"): _ADMIN,
    ("DELETE", f"{P}/environments/{{name}}"): _ADMIN,
    ("GET", f"{P}/hardware"): _SIGNED_IN,
    # planning: a plan reads the intent's project (and the endpoint it would change); a bench
    # or a comparison runs replicas, which is deploying
    ("POST", f"{P}/plan"): Rule("read", _apply, body=True),
    ("POST", f"{P}/endpoints/{{name}}/bench"): Rule("deploy", _endpoint("name")),
    ("GET", f"{P}/endpoints/{{name}}/profiles"): Rule("read", _endpoint("name")),
    ("POST", f"{P}/compare"): Rule("deploy", _apply, body=True),
    ("GET", f"{P}/endpoints/{{name}}/comparisons"): Rule("read", _endpoint("name")),
    ("GET", f"{P}/recommendations"): Rule("read", _query_endpoint_if_named),
}


def rule_for(method: str, template: str) -> Rule:
    """The rule of a route; 403 naming the route when it has none (never open by default)."""
    rule = RULES.get((method, template))
    if rule is None:
        raise Forbidden(
            f"no access rule for {method} {template}: it is refused until control/access.py "
            "says who may call it",
            route=f"{method} {template}",
        )
    return rule


def query_of(query_string: bytes) -> dict[str, str]:
    """The query's parameters as the routes read them: parsed by Starlette itself, so that a
    repeated parameter (``?project=a&project=b``) means here what it means to the route."""
    params = QueryParams(query_string.decode("latin-1"))
    return {name: params[name] for name in params}


def authorize(session: Session | None, actor: Actor, rule: Rule, target: Target) -> None:
    """Raise ``Forbidden`` unless ``actor`` may call a route under ``rule``. ``session`` is
    needed only when the rule's ``team_of`` is; call this in a thread when it is."""
    if actor.is_admin:
        return
    if actor.kind == "key":
        _authorize_key(actor, rule, target)
        return
    if rule.permission == "authenticated":
        return
    if rule.permission == "admin":
        raise Forbidden("only an admin may do this", permission="admin")
    teams = ANY if rule.team_of is None or session is None else rule.team_of(session, target)
    if teams is ANY:
        if not actor.teams_with(rule.permission):
            raise Forbidden(
                f"this needs the {rule.permission} permission on a team, and you hold no "
                f"role that grants it ({_roles(rule.permission)})",
                permission=rule.permission,
            )
        return
    for team in sorted(teams):
        if not actor.may(rule.permission, team):
            held = actor.role_in(team)
            raise Forbidden(
                f"this needs the {rule.permission} permission on team '{team}' "
                f"({_roles(rule.permission)}); you are "
                + (f"its {held}" if held else "not a member of it"),
                permission=rule.permission,
                team=team,
            )


def _authorize_key(actor: Actor, rule: Rule, target: Target) -> None:
    if not rule.keys:
        raise Forbidden(
            "an API key may only read its own project's usage and costs on the control "
            "plane: use a user token for this",
            permission=rule.permission,
        )
    project = target.query.get("project")
    if project != actor.project:
        raise Forbidden(
            f"an API key sees only its own project's usage: add ?project={actor.project}",
            field="project",
        )


def _roles(permission: str) -> str:
    return {
        "read": "viewer, deployer or owner",
        "deploy": "deployer or owner",
        "manage": "owner",
    }.get(permission, "admin")


# -- which route a request goes to ----------------------------------------------------------------


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, str]]:
    """(method, path template) of every API route of an app, routers included (as FastAPI
    itself flattens them)."""
    for context in iter_route_contexts(routes):
        if isinstance(context.original_route, APIRoute) and context.path:
            for method in sorted(context.methods or ()):
                yield method, context.path


@dataclass(frozen=True, slots=True)
class _Template:
    template: str
    regex: re.Pattern[str]
    methods: frozenset[str]


class RouteTable:
    """Matches a request to its route template, with Starlette's path compiler. Rebuilt when
    a path matches nothing (a route added after the app was made), so that such a route is
    refused for want of a rule rather than let through."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes = routes
        self._templates: list[_Template] = []
        self.rebuild()

    def rebuild(self) -> None:
        methods: dict[str, set[str]] = {}
        for method, template in api_routes(self._routes):
            methods.setdefault(template, set()).add(method)
        self._templates = [
            _Template(template, compile_path(template)[0], frozenset(verbs))
            for template, verbs in methods.items()
        ]

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """(template, path params) of the route ``method path`` goes to; None if none takes
        it (FastAPI then answers 404, or 405 for a known path with another method)."""
        for attempt in range(2):
            for entry in self._templates:
                found = entry.regex.match(path)
                if found is not None and method in entry.methods:
                    return entry.template, dict(found.groupdict())
            if attempt == 0:
                self.rebuild()
        return None
