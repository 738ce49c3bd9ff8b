"""Who is calling and whether the gateway lets them in: the governance steps of a request.

Authentication (key hash lookup, expiry, the per-address failure throttle), the customer a
call is made for (``X-Modelport-Customer`` or OpenAI's ``user``), the ``Caller`` admission
judges, and the audit of a refusal. Plain functions over what ``GatewayApp`` holds, so the
hot path pays one function call each and allocates nothing new.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from modelport.core.asgi import Scope, bearer_credential, header
from modelport.core.errors import ModelportError, Unauthorized
from modelport.core.routing import KeyPrincipal, Route
from modelport.gateway import access
from modelport.gateway.forwarding import Call
from modelport.gateway.request_headers import MAX_ID
from modelport.governance.admission import Caller, estimate_input_tokens
from modelport.governance.auth_failures import AuthFailureThrottle

__all__ = ["authenticate", "caller", "identify_customer", "report_denied"]

log = logging.getLogger("modelport.gateway")


def authenticate(
    keys: Mapping[str, KeyPrincipal],
    throttle: AuthFailureThrottle | None,
    authorization: bytes | None,
    scope: Scope,
) -> KeyPrincipal:
    """The principal of the request's bearer key (401 if missing, unknown, revoked or
    expired); with a ``throttle``, an address that failed too often lately gets 429."""
    client = scope.get("client")
    address = client[0] if client else ""
    if throttle is not None:
        throttle.check(address)  # one dict read unless this address failed lately
    token = bearer_credential(authorization)
    if token is None:
        # Not counted: a missing credential guesses nothing.
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' (create one with "
            "'modelport keys create')"
        )
    digest = hashlib.sha256(token).hexdigest()
    principal = keys.get(digest)
    try:
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        if principal.expires_at is not None:
            access.check_live(principal)
    except Unauthorized:
        if throttle is not None:
            throttle.failed(address)
        raise
    return principal


def report_denied(
    on_denied: Callable[..., None],
    scope: Scope,
    principal: KeyPrincipal,
    request_id: bytes,
    exc: ModelportError,
) -> None:
    """Tell the audit (``on_denied``) about a data-plane 403; a failure there is logged."""
    client = scope.get("client")
    try:
        on_denied(
            actor_name=f"key:{principal.key_id}",
            action="access.denied",
            target=f"endpoint:{exc.details.get('endpoint', '')}",
            request_id=request_id.decode(errors="replace"),
            source=client[0] if client else "",
            reason=exc.message,
        )
    except Exception:  # the audit must never turn a 403 into a 500
        log.exception("recording a denied request failed")


def identify_customer(scope: Scope, call: Call, payload: dict[str, Any] | None = None) -> None:
    """Set the customer the call is made for, if it names one (OpenAI's ``user`` in the
    ``payload``, then ``X-Modelport-Customer``, which wins), and 403 unless the key may name
    it. Runs after the endpoint is known (``call.endpoint``)."""
    if payload is not None:
        user = payload.get("user")
        if isinstance(user, str) and user:
            call.customer = user
            access.check_customer(call.principal, user, "user", call.endpoint or "")
    customer = header(scope, b"x-modelport-customer")
    if customer:
        call.customer = customer[:MAX_ID].decode(errors="replace")
        access.check_customer(
            call.principal, call.customer, "X-Modelport-Customer", call.endpoint or ""
        )


def caller(call: Call, route: Route) -> Caller:
    """What admission judges a call by: who makes it, for whom, to what, and how big."""
    principal = call.principal
    return Caller(
        key_id=principal.key_id,
        project=principal.project,
        team=principal.team,
        customer=call.customer[:MAX_ID] if call.customer else "",
        endpoint=route.endpoint,
        model=route.model,
        task=route.task,
        input_estimate=estimate_input_tokens(len(call.body)),
        max_output=_max_output(call.payload),
        version=route.version,
    )


def _max_output(payload: dict[str, Any] | None) -> int | None:
    """The output tokens an OpenAI call asks for at most (``max_completion_tokens``, else
    ``max_tokens``), if it says; the worker validates the value, admission only reads it."""
    if payload is None:
        return None
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
