"""Authentication and authorization of control-plane requests, before FastAPI runs.

``authenticate`` turns the request's bearer credential into an ``Actor`` without touching
the database on the event loop: the admin token and user tokens are compared with what the
plane holds in memory, OIDC tokens are verified against cached keys, and the rare API key
(which may only read its own project's usage) is looked up in a thread. ``authorize`` finds
the route's rule in ``control/access.py`` and, when the rule needs the target's team, looks it
up in a thread. Every refusal (401, 403) goes to the audit log; repeated 401s from one
address are throttled (429).
"""

from __future__ import annotations

import asyncio
import secrets
from types import MappingProxyType

from fastapi import FastAPI

from modelport.control import identity
from modelport.control.access import RouteTable, Rule, Target, authorize, query_of, rule_for
from modelport.control.deps import ADMIN
from modelport.control.plane import ControlPlane
from modelport.core.asgi import Scope, bearer_token, header
from modelport.core.errors import Forbidden, ModelportError, Unauthorized
from modelport.governance.auth_failures import AuthFailureThrottle
from modelport.governance.identity import USER_TOKEN_PREFIX, Actor
from modelport.governance.keys import hash_secret
from modelport.governance.oidc import OidcVerifier

__all__ = ["ADMIN", "AccessGuard", "Matched"]

_KEY_PREFIX = "mp_"
_MAX_REQUEST_ID = 128


class Matched:
    """The route a request goes to: its rule, template and path parameters."""

    __slots__ = ("params", "rule", "template")

    def __init__(self, rule: Rule, template: str, params: dict[str, str]) -> None:
        self.rule = rule
        self.template = template
        self.params = params


class AccessGuard:
    """Who calls (``authenticate``) and whether they may (``authorize``)."""

    def __init__(self, app: FastAPI, plane: ControlPlane) -> None:
        self.app = app
        self.plane = plane
        self.routes = RouteTable(app.routes)
        settings = plane.settings
        self.oidc = (
            OidcVerifier(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                jwks_url=settings.oidc_jwks_url,
                user_claim=settings.oidc_user_claim,
            )
            if settings.oidc_issuer
            else None
        )
        self.throttle = AuthFailureThrottle(
            settings.auth_failures_per_minute, on_throttled=self._throttled
        )

    # -- who ---------------------------------------------------------------------------------

    async def authenticate(self, scope: Scope) -> Scope:
        """The scope with ``state["actor"]`` and ``state["request_id"]`` set; raises
        ``Unauthorized`` (counted against the address) or ``TooManyRequests``."""
        given = header(scope, b"x-request-id")
        request_id = given.decode("latin-1")[:_MAX_REQUEST_ID] if given else secrets.token_hex(16)
        state = {**(scope.get("state") or {}), "request_id": request_id}
        scope = {**scope, "state": state}
        source = _source(scope)
        self.throttle.check(source)
        self.plane.identities.refresh_if_old()
        try:
            actor = await self._actor(bearer_token(scope))
        except Unauthorized as exc:
            if bearer_token(scope) is not None:  # a wrong credential, not a missing one
                self.throttle.failed(source)
            self.denied(scope, exc, actor_name="")
            raise
        state["actor"] = actor
        return scope

    async def _actor(self, token: bytes | None) -> Actor:
        if token is None:
            raise Unauthorized(
                "missing credential: send 'Authorization: Bearer <token>' with your user token "
                "(or the admin token from $MODELPORT_HOME/admin-token)"
            )
        # latin-1 maps every byte to one character, as Starlette decodes headers.
        text = token.decode("latin-1")
        if self.plane.is_admin(text):
            return ADMIN
        if text.startswith(USER_TOKEN_PREFIX):
            user = self.plane.identities.by_token(text)
            if user is None:
                raise Unauthorized("invalid user token (rotated, disabled or never issued)")
            return user
        if text.startswith(_KEY_PREFIX):
            key = await asyncio.to_thread(self._key, hash_secret(text))
            if key is None:
                raise Unauthorized("invalid API key (revoked, expired or never issued)")
            return key
        if self.oidc is not None and OidcVerifier.looks_like_jwt(text):
            claims = await self.oidc.verify(text)
            return self._oidc_actor(self.oidc.user_of(claims))
        raise Unauthorized(
            "invalid admin token or user token: send the admin token from "
            "$MODELPORT_HOME/admin-token, or your own (an admin makes it: modelport users create)"
        )

    def _key(self, key_hash: str) -> Actor | None:
        with self.plane.db.session() as session:
            return identity.key_actor(session, key_hash)

    def _oidc_actor(self, name: str) -> Actor:
        identities = self.plane.identities
        if identities.is_disabled(name):
            raise Unauthorized(f"user '{name}' is disabled")
        user = identities.by_name(name)
        if user is None:  # signed in, but no admin made it a user: it holds no role
            return Actor(name, "oidc")
        return Actor(name, "oidc", MappingProxyType(dict(user.teams)), admin=user.admin)

    # -- may they ----------------------------------------------------------------------------

    def match(self, scope: Scope) -> Matched | None:
        """The route ``scope`` goes to, with its rule; None when no route takes this path and
        method (FastAPI then answers 404 or 405). Raises ``Forbidden`` for a route without a
        rule."""
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        found = self.routes.match(method, scope["path"])
        if found is None:
            return None
        template, params = found
        return Matched(rule_for(method, template), template, params)

    async def authorize(self, scope: Scope, matched: Matched, body: bytes = b"") -> None:
        """Raise ``Forbidden`` unless the request's actor may call the matched route."""
        actor: Actor = scope["state"]["actor"]
        if actor.is_admin:
            return  # every power, and no lookup
        target = Target(matched.params, query_of(scope.get("query_string", b"")), body)
        rule = matched.rule
        try:
            if (
                rule.team_of is None
                or actor.kind == "key"
                or rule.permission
                in (
                    "authenticated",
                    "admin",
                )
            ):
                authorize(None, actor, rule, target)
            else:
                await asyncio.to_thread(self._authorize, actor, rule, target)
        except Forbidden as exc:
            self.denied(scope, exc, actor.name)
            raise

    def _authorize(self, actor: Actor, rule: Rule, target: Target) -> None:
        with self.plane.db.session() as session:
            authorize(session, actor, rule, target)

    # -- the record --------------------------------------------------------------------------

    def denied(self, scope: Scope, exc: ModelportError, actor_name: str) -> None:
        """Queue the refusal for the audit log (never blocks)."""
        self.plane.audit.denied(
            actor_name=actor_name,
            action="access.denied",
            target=f"{scope['method']} {scope['path']}",
            request_id=str(scope["state"].get("request_id", "")),
            source=_source(scope),
            reason=f"{exc.status} {exc.message}",
        )

    def _throttled(self, address: str) -> None:
        self.plane.audit.denied(
            actor_name="",
            action="auth.throttled",
            target=address,
            request_id="",
            source=address,
            reason="too many failed authentications",
        )


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""
