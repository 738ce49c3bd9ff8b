"""What an API key may do on the data plane: which endpoints it may call (and see), pin, and
which customers it may name.

Everything is decided from the key's principal and the endpoint's ``Traffic``, both
immutable and precomputed when published: a check is a set lookup or two, no I/O. Each
refusal is a 403 whose message names what was missing, so a caller knows what to ask for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from modelport.core.errors import Forbidden, Unauthorized
from modelport.core.routing import KeyPrincipal, Traffic

__all__ = ["check_customer", "check_endpoint", "check_live", "check_pin", "may_call", "visible"]


def check_live(principal: KeyPrincipal) -> None:
    """Refuse a key past its ``expires_at`` (401: the credential no longer works)."""
    if principal.expires_at is not None and principal.expires_at <= time.time():
        when = datetime.fromtimestamp(principal.expires_at, UTC).isoformat(timespec="seconds")
        raise Unauthorized(
            f"API key '{principal.key_id}' expired at {when}: rotate it or create a new one "
            "('modelport keys rotate' / 'modelport keys create')",
            key=principal.key_id,
        )


def may_call(principal: KeyPrincipal, name: str, traffic: Traffic) -> bool:
    """Whether the key's scope and the endpoint's consumers both admit it."""
    if principal.scopes and name not in principal.scopes:
        return False
    return not traffic.consumers or not traffic.consumers.isdisjoint(principal.grants)


def check_endpoint(principal: KeyPrincipal, name: str, traffic: Traffic) -> None:
    """403 unless the key may call endpoint ``name`` (its scope, then the consumers)."""
    if principal.scopes and name not in principal.scopes:
        raise Forbidden(
            f"API key '{principal.key_id}' is scoped to endpoints "
            f"{', '.join(sorted(principal.scopes))}: endpoint '{name}' is outside its scope",
            param="model",
            endpoint=name,
            scope=sorted(principal.scopes),
        )
    if traffic.consumers and traffic.consumers.isdisjoint(principal.grants):
        raise Forbidden(
            f"endpoint '{name}' is not open to API key '{principal.key_id}' of project "
            f"'{principal.project}': its consumers are {', '.join(sorted(traffic.consumers))} "
            "(the intent's 'consumers')",
            param="model",
            endpoint=name,
            consumers=sorted(traffic.consumers),
        )


def check_pin(principal: KeyPrincipal, name: str) -> None:
    """403 unless the key holds the ``pin`` permission."""
    if not principal.can_pin:
        raise Forbidden(
            f"API key '{principal.key_id}' may not pin a revision of endpoint '{name}': that "
            "needs the 'pin' permission (modelport keys create --permission pin)",
            param="model",
            endpoint=name,
            permission="pin",
        )


def check_customer(principal: KeyPrincipal, customer: str, field: str, name: str = "") -> None:
    """403 unless the key may name ``customer`` (one of its customers, or ``any_customer``)."""
    if not principal.may_name_customer(customer):
        raise Forbidden(
            f"API key '{principal.key_id}' may not name customer {customer!r} in {field}: "
            "give the key that customer (--customer) or the 'any_customer' permission",
            param=field,
            field=field,
            endpoint=name,
            permission="any_customer",
        )


def visible(principal: KeyPrincipal, routes: Mapping[str, Traffic]) -> dict[str, Traffic]:
    """The endpoints the key may call: what ``/v1/models`` lists."""
    return {name: t for name, t in routes.items() if may_call(principal, name, t)}
