"""Which revision of an endpoint answers a request: pinned, segment rule, then weights.

Everything here reads the immutable ``Traffic`` of the current snapshot; nothing is looked up
elsewhere. An endpoint with one revision (the common case) costs one attribute read.
"""

from __future__ import annotations

import random
import zlib

from modelport.core.asgi import Scope, header
from modelport.core.errors import NotFound
from modelport.core.routing import BUCKETS, KeyPrincipal, Route, Traffic

__all__ = ["bucket_of", "choose", "pinned"]


def bucket_of(identity: str) -> int:
    """A stable bucket for a customer or key, so that one caller keeps seeing one revision.

    Buckets only grow into the candidate's share as a canary widens (a caller in the 10%
    stays in the 50%), so nobody flips back and forth between revisions mid-rollout."""
    return zlib.crc32(identity.encode()) % BUCKETS


def pinned(traffic: Traffic, label: str) -> Route:
    """The revision a caller named explicitly (``endpoint@r2`` or ``/versions/r2``)."""
    route = traffic.revisions.get(label)
    if route is None:
        running = ", ".join(sorted(traffic.revisions))
        raise NotFound(
            f"revision '{label}' of endpoint '{traffic.endpoint}' is not running "
            f"(running: {running})",
            param="model",
        )
    return route


def choose(
    traffic: Traffic, scope: Scope, principal: KeyPrincipal, customer: str | None
) -> tuple[Route, bool]:
    """The revision for one unpinned request, and whether the call is a sample of the
    endpoint's traffic (drawn by weight) rather than routed there by a segment rule: only
    samples feed the SLO window a rollout is judged on, so no caller can steer a canary's
    verdict by choosing where its requests go."""
    for rule in traffic.segments:
        if rule.kind == "header":
            # Choosing a revision by header is a privilege: other keys follow the weights.
            if not principal.can_route_by_header:
                continue
            value = header(scope, rule.header)
            matched = value is not None and value.decode(errors="replace") == rule.value
        elif rule.kind == "customer":
            matched = customer == rule.value
        elif rule.kind == "key":
            matched = principal.key_id == rule.value
        else:
            matched = principal.project == rule.value
        if matched:
            return rule.route, False
    split = traffic.split
    if not split:
        return traffic.primary, True
    if traffic.sticky == "customer" and customer:
        bucket = bucket_of(customer)
    elif traffic.sticky == "key":
        bucket = bucket_of(principal.key_id)
    else:
        bucket = random.randrange(BUCKETS)  # noqa: S311 - a traffic split, not a secret
    for bound, route in split:
        if bucket < bound:
            # A revision with no ready replica (starting, restarting) leaves its share to the
            # stable one rather than failing it.
            return (route if route.replicas else traffic.primary), True
    return traffic.primary, True
