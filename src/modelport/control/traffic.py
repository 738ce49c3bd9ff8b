"""From the control plane's view of an endpoint (stable revision, candidate, weight, routing
rules) to the immutable ``Traffic`` the gateway reads. Pure: no I/O, unit-tested directly."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from modelport.core.intent import Intent, Routing
from modelport.core.routing import BUCKETS, Route, SegmentRule, Traffic

__all__ = ["DEFAULT_CONSUMERS", "consumers_of", "traffic_of"]

# An endpoint created without an intent belongs to project "default": its keys may call it.
DEFAULT_CONSUMERS = frozenset({"project:default"})


def consumers_of(intent: Intent | None) -> frozenset[str]:
    """Who may call an endpoint: its own project's keys, and the intent's ``consumers``
    (``project:x``, ``team:y``, ``key:<id>``). The own project is always in: a team cannot
    lock itself out of its endpoint by naming others."""
    if intent is None:
        return DEFAULT_CONSUMERS
    return frozenset({f"project:{intent.project}", *intent.consumers})


def traffic_of(
    routes: Mapping[str, Route],
    *,
    stable: str,
    candidate: str | None = None,
    weight: float = 0.0,
    shadow_sample: float = 0.0,
    previous: str | None = None,
    routing: Routing | None = None,
    consumers: frozenset[str] = DEFAULT_CONSUMERS,
) -> Traffic:
    """The gateway's view of one endpoint.

    ``weight`` is the candidate's percentage of live traffic; with ``shadow_sample`` instead,
    the candidate answers nothing and gets that share mirrored. Segment rules naming a revision
    that is not running are left out: their traffic follows the weights.
    """
    primary = routes[stable]
    chosen = routes.get(candidate) if candidate else None
    split: tuple[tuple[int, Route], ...] = ()
    if chosen is not None and weight >= 100:
        primary = chosen  # fully switched: the candidate answers everything, metadata too
    elif chosen is not None and weight > 0:
        split = ((round(weight * BUCKETS / 100), chosen), (BUCKETS, primary))
    segments: list[SegmentRule] = []
    fallback: dict[str, tuple[Route | str, ...]] = {}
    if routing is not None:
        named = {"stable": routes[stable], "candidate": chosen, **routes}
        for segment in routing.segments:
            target = named.get(segment.revision)
            if target is None:
                continue
            segments.append(
                SegmentRule(
                    kind=segment.kind,
                    value=segment.value,
                    route=target,
                    header=(segment.name or "").lower().encode(),
                )
            )
        for label in routes:
            chain: list[Route | str] = []
            for step in routing.fallback:
                if step != "previous":
                    chain.append(step)
                    continue
                before = stable if label == candidate else previous
                if before is not None and before != label and before in routes:
                    chain.append(routes[before])
            if chain:
                fallback[label] = tuple(chain)
    return Traffic(
        primary=primary,
        revisions=MappingProxyType(dict(routes)),
        split=split,
        segments=tuple(segments),
        sticky=routing.sticky if routing is not None else "none",
        shadow=chosen if chosen is not None and shadow_sample > 0 else None,
        shadow_sample=shadow_sample,
        fallback=MappingProxyType(fallback),
        timeout_s=routing.timeout_s if routing is not None else None,
        consumers=consumers,
    )
