"""Throttle of repeated authentication failures, per source address.

A client that keeps presenting wrong credentials is guessing or misconfigured; either way it
should stop costing hash lookups and log lines. Each address gets a sliding window of its
recent failures; past ``per_minute`` of them within a minute, every request from it is
refused with 429 until the oldest failure leaves the window. Successful requests are never
counted, so a well-configured client sharing an address with a broken one is only refused
while the broken one keeps failing.

Memory is bounded: at most ``max_addresses`` addresses are tracked, the least recently
failing one forgotten first (an attacker rotating addresses gets no more than that).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from modelport.core.errors import TooManyRequests

__all__ = ["AuthFailureThrottle"]

log = logging.getLogger("modelport.auth")

_WINDOW_S = 60.0


class AuthFailureThrottle:
    """Counts authentication failures per address and refuses an address past the limit.

    ``check`` is called before authenticating (cheap: one dict lookup for an address that
    never failed); ``failed`` after a credential was refused. ``per_minute`` 0 disables it.
    """

    def __init__(
        self,
        per_minute: int = 20,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_throttled: Callable[[str], None] | None = None,
    ) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._clock = clock
        # address -> times of its failures in the last minute (oldest first); ordered by
        # the latest failure, so the first entry is the one to forget when full.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # Addresses currently throttled, so one episode logs (and audits) once.
        self._throttled: set[str] = set()
        # Called once per throttling episode with the address (audit: ``auth.throttled``).
        self.on_throttled = on_throttled

    def check(self, address: str) -> None:
        """Raise TooManyRequests (with Retry-After) while ``address`` is throttled."""
        times = self._failures.get(address)
        if times is None or len(times) < self.per_minute or self.per_minute <= 0:
            return
        now = self._clock()
        self._expire(times, now)
        if len(times) < self.per_minute:
            self._throttled.discard(address)
            return
        retry = max(1, math.ceil(times[0] + _WINDOW_S - now))
        raise TooManyRequests(
            f"too many failed authentications from this address; retry in {retry} s",
            headers=((b"retry-after", str(retry).encode()),),
            retry_after=retry,
        )

    def failed(self, address: str) -> None:
        """Count one refused credential from ``address``."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.max_addresses:
                forgotten, _ = self._failures.popitem(last=False)
                self._throttled.discard(forgotten)
            times = self._failures[address] = deque()
        else:
            self._failures.move_to_end(address)
            self._expire(times, now)
            if len(times) < self.per_minute:
                self._throttled.discard(address)  # the last episode is over
        times.append(now)
        # The deque never needs more than the limit: older entries cannot change the verdict.
        while len(times) > self.per_minute:
            times.popleft()
        if len(times) >= self.per_minute and address not in self._throttled:
            self._throttled.add(address)
            # The address only: never the credential that was presented.
            log.warning(
                "authentication failures: %d in a minute from %s; refusing it with 429",
                len(times),
                address,
            )
            if self.on_throttled is not None:
                self.on_throttled(address)

    def tracked(self) -> int:
        """How many addresses have recent failures on record (for tests and metrics)."""
        return len(self._failures)

    @staticmethod
    def _expire(times: deque[float], now: float) -> None:
        while times and times[0] <= now - _WINDOW_S:
            times.popleft()
