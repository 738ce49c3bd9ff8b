"""Admission: the gate every metered data-plane call passes after routing, before forwarding.

Guards (rate limits, concurrency, budgets) each decide whether a caller may go on. A guard
that admits hands back a :class:`Hold`: what it took (a request slot, a reservation) and
the headers it adds to the answer. The gateway reports output tokens to the hold as they
are streamed (``delivered``) and gives it back exactly once when the call is metered
(``release``), whatever the outcome. A guard that refuses raises ``TooManyRequests``;
:class:`Admission` then releases the holds the guards before it took, so a refused
request keeps nothing (a concurrency slot, a budget reservation) it did not use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from modelport.core.usage import Units

__all__ = ["NO_HOLD", "Admission", "Caller", "Guard", "Hold", "estimate_input_tokens"]

#: The status a hold is released with when a later guard refused the request.
REFUSED = 429


@dataclass(slots=True)
class Caller:
    """Who calls what: what limits and budgets are keyed by, and the size of the ask."""

    key_id: str
    project: str
    team: str
    customer: str  # "" when the call names none
    endpoint: str
    model: str
    task: str
    input_estimate: int  # prompt tokens estimated from the body (bytes // 4, at least 1)
    max_output: int | None  # max_tokens / max_completion_tokens asked, if any
    version: int = 0  # the routed model version: budgets price by it (``model:version``)


class Hold(Protocol):
    """What one guard holds for one admitted call, until it is metered."""

    #: Added to the answer (``x-ratelimit-*``, ...); may be empty.
    headers: list[tuple[bytes, bytes]]

    def delivered(self, tokens: int) -> None:
        """The output tokens streamed SO FAR (a running total, not a delta); called per chunk."""

    def release(self, status: int, units: Units | None) -> None:
        """The call is over (called exactly once): its status and the units its usage event
        is journaled with (None: no event, e.g. a refusal by a later guard, status 429)."""


class Guard(Protocol):
    """Decides whether a caller may go on; raises ``TooManyRequests(headers=...)`` if not."""

    async def admit(self, caller: Caller) -> Hold: ...


class _NoHold:
    """The hold of a guard that has nothing to hold for this caller (no limit applies)."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []  # shared: read, never extended

    def delivered(self, tokens: int) -> None:
        pass

    def release(self, status: int, units: Units | None) -> None:
        pass


NO_HOLD: Hold = _NoHold()


class _Holds:
    """Several guards' holds as one: headers joined, every call passed on to each."""

    __slots__ = ("_holds", "headers")

    def __init__(self, holds: list[Hold]) -> None:
        self._holds = holds
        self.headers = [h for hold in holds for h in hold.headers]

    def delivered(self, tokens: int) -> None:
        for hold in self._holds:
            hold.delivered(tokens)

    def release(self, status: int, units: Units | None) -> None:
        for hold in self._holds:
            hold.release(status, units)


class Admission:
    """The guards in order; the first refusal wins and releases the holds already taken."""

    __slots__ = ("guards",)

    def __init__(self, guards: Sequence[Guard]) -> None:
        self.guards = tuple(guards)

    async def admit(self, caller: Caller) -> Hold:
        """One hold for all guards, or ``TooManyRequests`` from the first that refuses."""
        holds: list[Hold] = []
        try:
            for guard in self.guards:
                hold = await guard.admit(caller)
                if hold is not NO_HOLD:
                    holds.append(hold)
        except BaseException:
            # Refused (or cancelled) halfway: what the earlier guards took goes back now.
            for hold in holds:
                hold.release(REFUSED, None)
            raise
        if not holds:
            return NO_HOLD
        if len(holds) == 1:
            return holds[0]
        return _Holds(holds)


def estimate_input_tokens(body_bytes: int) -> int:
    """Prompt tokens estimated from the body's size: about 4 bytes a token, at least 1."""
    return max(1, body_bytes // 4)
