"""Throttling: requests per minute, tokens per minute and concurrent requests.

Limits are set per key, project, team, customer and endpoint; every scope of a caller that
has a limit is checked, so the tightest applies. The gateway reads them from a
:class:`LimitTable`, an immutable snapshot the control plane publishes on every change.

- Requests per minute: an exact moving window. A request refused by a later check (another
  scope's limit, concurrency, a budget) has still used its place in the windows checked
  before it, so scopes are checked tightest first, where a refusal is likeliest.
- Tokens per minute: admission refuses once a window's tokens are used up; tokens (input
  and output) are counted as they are delivered: a stream's output per chunk, a unary
  call's when it is metered. A call in progress is never cut off.
- Concurrency: slots taken at admission and given back when the call is metered.

Refusals are ``TooManyRequests`` (429) naming the limit and scope, with ``Retry-After``
and OpenAI's ``x-ratelimit-*`` headers, which admitted answers carry too.

When the shared counters (Redis) cannot be reached, requests are admitted unthrottled
(``fail_open``, the default: the limiter's store going down must not take the data plane
with it) or refused with 503 (``fail_open=False``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from modelport.core.errors import TooManyRequests, Unavailable
from modelport.core.usage import Units
from modelport.governance.admission import NO_HOLD, Caller, Hold
from modelport.governance.counters import (
    MINUTE,
    RPM,
    TPM,
    Counters,
    LoopStorage,
    MemoryCounters,
    StorageDown,
    Window,
)

__all__ = [
    "KINDS",
    "ConcurrencyGuard",
    "Limit",
    "LimitTable",
    "RateLimitGuard",
    "duration",
]

log = logging.getLogger("modelport.limits")

#: The scopes a limit can be set on, in the order a caller's scopes are looked up.
KINDS = ("key", "project", "team", "customer", "endpoint")
#: The fields of a limit.
FIELDS = ("rpm", "tpm", "concurrency")


@dataclass(frozen=True, slots=True)
class Limit:
    """One scope's limits; None: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    def tightest(self, other: Limit) -> Limit:
        """Field by field, the smaller of two limits on the same scope (an endpoint's
        intent and the API can both set one)."""
        return Limit(*(_smaller(getattr(self, f), getattr(other, f)) for f in FIELDS))

    def to_dict(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "tpm": self.tpm, "concurrency": self.concurrency}


def _smaller(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


_Scope = tuple[str, Limit]  # ("endpoint:chat", its limit)


class LimitTable:
    """Every limit, as the gateway reads it: ``(kind, name) -> Limit``, never changed."""

    __slots__ = ("_kinds", "concurrent", "limits", "rated")

    def __init__(self, limits: Mapping[tuple[str, str], Limit] | None = None) -> None:
        self.limits: Mapping[tuple[str, str], Limit] = MappingProxyType(dict(limits or {}))
        by_kind: dict[str, dict[str, _Scope]] = {}
        for (kind, name), limit in self.limits.items():
            if kind not in KINDS:
                raise ValueError(f"unknown limit scope {kind!r}")
            by_kind.setdefault(kind, {})[name] = (f"{kind}:{name}", limit)
        # Only the kinds that have limits are looked up per request.
        self._kinds = tuple((kind, by_kind[kind]) for kind in KINDS if kind in by_kind)
        self.rated = any(lim.rpm or lim.tpm for lim in self.limits.values())
        self.concurrent = any(lim.concurrency for lim in self.limits.values())

    def __bool__(self) -> bool:
        return bool(self.limits)

    def scopes(self, caller: Caller) -> list[_Scope]:
        """The caller's scopes that have a limit, as ``("kind:name", limit)``."""
        found = []
        for kind, names in self._kinds:
            scope = names.get(_name_of(caller, kind))
            if scope is not None:
                found.append(scope)
        return found


def _name_of(caller: Caller, kind: str) -> str:
    if kind == "key":
        return caller.key_id
    if kind == "project":
        return caller.project
    if kind == "team":
        return caller.team
    if kind == "customer":
        return caller.customer
    return caller.endpoint


def duration(seconds: float) -> str:
    """OpenAI's reset duration: ``"1s"``, ``"6m0s"``, ``"1h2m3s"``, ``"250ms"``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _retry_after(seconds: float) -> bytes:
    return str(max(1, math.ceil(seconds))).encode()


def _describe(scope: str) -> str:
    kind, _, name = scope.partition(":")
    return f"{kind} '{name}'"


class _Outage:
    """What a guard does when its counters are unreachable: admit, or answer 503."""

    def __init__(self, fail_open: bool) -> None:
        self.fail_open = fail_open
        self._logged_at = 0.0

    def handle(self, error: StorageDown) -> None:
        now = time.monotonic()
        if now - self._logged_at > 10:  # once in a while, not once a request
            self._logged_at = now
            log.warning(
                "rate limit counters unreachable (%s): requests are %s",
                error,
                "admitted unthrottled" if self.fail_open else "refused",
            )
        if not self.fail_open:
            exc = Unavailable(
                "rate limits cannot be checked right now (their store is unreachable): retry "
                "shortly"
            )
            exc.headers = ((b"retry-after", b"5"),)
            raise exc from error


# -- requests and tokens per minute --------------------------------------------------------


class _TokenHold:
    """Counts a call's tokens into its scopes' token windows as they are delivered."""

    __slots__ = ("_counted", "_counters", "_windows", "headers")

    def __init__(
        self,
        counters: Counters,
        windows: list[tuple[str, int]],
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._counters = counters
        self._windows = windows  # (scope, tpm) of every scope with a token limit
        self._counted = 0  # output tokens counted so far
        self.headers = headers

    def _add(self, tokens: int) -> None:
        for scope, tpm in self._windows:
            self._counters.add_tokens(scope, tpm, tokens)

    def delivered(self, tokens: int) -> None:
        more = tokens - self._counted
        if more > 0 and self._windows:
            self._counted = tokens
            self._add(more)

    def release(self, status: int, units: Units | None) -> None:
        if units is None or not self._windows:
            return
        # The input once, and what the stream's chunks did not count (a unary call: all).
        tokens = units.input_tokens + max(0, units.output_tokens - self._counted)
        self._counted = max(self._counted, units.output_tokens)
        if tokens > 0:
            self._add(tokens)


def _tightest(windows: Iterable[Window]) -> Window | None:
    best: Window | None = None
    for window in windows:
        if best is None or (window.remaining, window.limit) < (best.remaining, best.limit):
            best = window
    return best


def _headers(requests: Window | None, tokens: Window | None) -> list[tuple[bytes, bytes]]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token windows."""
    headers = []
    if requests is not None:
        headers += [
            (b"x-ratelimit-limit-requests", str(requests.limit).encode()),
            (b"x-ratelimit-remaining-requests", str(max(0, requests.remaining)).encode()),
            (b"x-ratelimit-reset-requests", duration(requests.reset_s).encode()),
        ]
    if tokens is not None:
        headers += [
            (b"x-ratelimit-limit-tokens", str(tokens.limit).encode()),
            (b"x-ratelimit-remaining-tokens", str(max(0, tokens.remaining)).encode()),
            (b"x-ratelimit-reset-tokens", duration(tokens.reset_s).encode()),
        ]
    return headers


class RateLimitGuard:
    """Requests and tokens per minute, per scope; the tightest applies."""

    def __init__(self, counters: Counters, *, fail_open: bool = True) -> None:
        self.counters = counters
        self.table = LimitTable()
        self._outage = _Outage(fail_open)
        self._memory = counters.storage if isinstance(counters, MemoryCounters) else None

    @property
    def configured(self) -> bool:
        """Whether any scope has a request or token limit (else admission skips this guard)."""
        return self.table.rated

    def publish(self, table: LimitTable) -> None:
        """Swap in a new snapshot of limits (one attribute store: atomic for readers)."""
        self.table = table

    async def admit(self, caller: Caller) -> Hold:
        table = self.table
        if not table.rated:
            return NO_HOLD
        scopes = table.scopes(caller)
        if not scopes:
            return NO_HOLD
        memory = self._memory
        if memory is not None:
            return self._admit_in_memory(memory, scopes)
        try:
            return await self._admit(scopes)
        except StorageDown as exc:
            self._outage.handle(exc)
            return NO_HOLD

    def _admit_in_memory(self, storage: LoopStorage, scopes: list[_Scope]) -> Hold:
        """``_admit`` on this process's counters: the same decisions, without a coroutine or
        an intermediate object per counter (the hot path of a single gateway)."""
        now = time.time()
        token_windows: list[tuple[str, int]] = []
        tokens: Window | None = None
        for scope, limit in scopes:
            tpm = limit.tpm
            if tpm:
                used, expires = storage.count(TPM + scope)
                token_windows.append((scope, tpm))
                if tokens is None or (tpm - used, tpm) < (tokens.remaining, tokens.limit):
                    tokens = Window(used < tpm, tpm, tpm - used, expires - now)
                if used >= tpm:
                    raise _refused("tpm", scope, tokens, _headers(None, tokens))
        requests: Window | None = None
        rated = [(limit.rpm, scope) for scope, limit in scopes if limit.rpm]
        if len(rated) > 1:
            rated.sort()
        for rpm, scope in rated:
            admitted, oldest, hits = storage.hit(RPM + scope, rpm, MINUTE)
            if requests is None or (rpm - hits, rpm) < (requests.remaining, requests.limit):
                requests = Window(admitted, rpm, rpm - hits, oldest + MINUTE - now)
            if not admitted:
                window = Window(False, rpm, rpm - hits, oldest + MINUTE - now)
                raise _refused("rpm", scope, window, _headers(window, tokens))
        return _TokenHold(self.counters, token_windows, _headers(requests, tokens))

    async def _admit(self, scopes: list[_Scope]) -> Hold:
        counters = self.counters
        # Tokens first: a look that consumes nothing, so a token refusal costs no request.
        token_windows: list[tuple[str, int]] = []
        tokens: list[Window] = []
        for scope, limit in scopes:
            if limit.tpm:
                window = await counters.tokens(scope, limit.tpm)
                token_windows.append((scope, limit.tpm))
                tokens.append(window)
                if not window.admitted:
                    raise _refused("tpm", scope, window, _headers(None, window))
        requests: list[Window] = []
        for scope, rpm in sorted(
            ((scope, limit.rpm) for scope, limit in scopes if limit.rpm), key=lambda s: s[1]
        ):
            window = await counters.hit_request(scope, rpm)
            requests.append(window)
            if not window.admitted:
                raise _refused("rpm", scope, window, _headers(window, _tightest(tokens)))
        headers = _headers(_tightest(requests), _tightest(tokens))
        return _TokenHold(counters, token_windows, headers)


def _refused(
    limit: str, scope: str, window: Window, headers: list[tuple[bytes, bytes]]
) -> TooManyRequests:
    per = "requests" if limit == "rpm" else "tokens"
    return TooManyRequests(
        f"rate limit reached: {window.limit} {per} per minute for {_describe(scope)}; "
        f"retry in {duration(window.reset_s)}",
        headers=((b"retry-after", _retry_after(window.reset_s)), *headers),
        limit=limit,
        scope=scope,
    )


# -- concurrency ---------------------------------------------------------------------------


class _SlotHold:
    """The concurrency slots one call holds, given back when it is metered."""

    __slots__ = ("_counters", "_renewed_at", "_slots", "headers")

    def __init__(self, counters: Counters, slots: list[tuple[str, str]]) -> None:
        self._counters = counters
        self._slots = slots  # (scope, lease)
        self._renewed_at = time.monotonic()
        self.headers: list[tuple[bytes, bytes]] = []

    def delivered(self, tokens: int) -> None:
        # A stream that outlives a Redis lease renews it; in memory this never fires.
        now = time.monotonic()
        if now - self._renewed_at > self._counters.renew_every_s:
            self._renewed_at = now
            for scope, lease in self._slots:
                self._counters.renew(scope, lease)

    def release(self, status: int, units: Units | None) -> None:
        slots, self._slots = self._slots, []
        for scope, lease in slots:
            self._counters.leave(scope, lease)


def _second(pair: tuple[str, int]) -> int:
    return pair[1]


def _busy(scope: str, limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"concurrency limit reached: {limit} requests at a time for {_describe(scope)}; "
        "retry when one of them has finished",
        headers=((b"retry-after", b"1"),),
        limit="concurrency",
        scope=scope,
    )


class ConcurrencyGuard:
    """Concurrent requests per scope: a slot per call, from admission until it is metered."""

    def __init__(self, counters: Counters, *, fail_open: bool = True) -> None:
        self.counters = counters
        self.table = LimitTable()
        self._outage = _Outage(fail_open)
        self._memory = counters if isinstance(counters, MemoryCounters) else None

    @property
    def configured(self) -> bool:
        """Whether any scope has a concurrency limit (else admission skips this guard)."""
        return self.table.concurrent

    def publish(self, table: LimitTable) -> None:
        self.table = table

    async def admit(self, caller: Caller) -> Hold:
        table = self.table
        if not table.concurrent:
            return NO_HOLD
        wanted = [(s, lim.concurrency) for s, lim in table.scopes(caller) if lim.concurrency]
        if not wanted:
            return NO_HOLD
        taken: list[tuple[str, str]] = []
        counters = self.counters
        if len(wanted) > 1:
            wanted.sort(key=_second)
        memory = self._memory
        if memory is not None:  # this process's counters: no coroutine per slot
            for scope, limit in wanted:
                if not memory.take(scope, limit):
                    for held, held_lease in taken:
                        memory.leave(held, held_lease)
                    raise _busy(scope, limit)
                taken.append((scope, ""))
            return _SlotHold(memory, taken)
        try:
            for scope, limit in wanted:
                lease = await counters.enter(scope, limit)
                if lease is None:
                    for held, held_lease in taken:
                        counters.leave(held, held_lease)
                    raise _busy(scope, limit)
                taken.append((scope, lease))
        except StorageDown as exc:
            for held, held_lease in taken:
                counters.leave(held, held_lease)
            self._outage.handle(exc)
            return NO_HOLD
        return _SlotHold(counters, taken)
