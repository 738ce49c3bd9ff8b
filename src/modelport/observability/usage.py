"""Where the gateway hands each request's usage, and the in-memory view of the last ones.

The server's sink is the durable ``UsageJournal`` (``observability/journal.py``); the last
requests are also kept in memory, fed by the journal's fan-out, and shown at
``/api/v1/usage/recent``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from modelport.core.usage import UsageRecord

__all__ = ["RecentUsage", "UsageSink"]


class UsageSink(Protocol):
    def record(self, record: UsageRecord) -> None:
        """Take one request's usage. Must not block: it runs on the request path."""


class RecentUsage:
    """Keeps the most recent records in a bounded ring.

    A ``UsageSink`` itself (for a gateway without a journal), and a journal consumer:
    ``journal.subscribe(recent.take)``."""

    def __init__(self, size: int = 1000) -> None:
        self._records: deque[UsageRecord] = deque(maxlen=size)
        # Called (on the event loop) before each read: the journal's ``fan_out``, so a request
        # answered a moment ago is shown at once rather than after the next fan-out tick.
        self.catch_up: Callable[[], None] | None = None

    def record(self, record: UsageRecord) -> None:
        self._records.append(record)

    def take(self, records: Sequence[UsageRecord]) -> None:
        """Add a batch of records (the journal's fan-out calls this on the event loop)."""
        self._records.extend(records)

    def recent(self, limit: int = 100) -> list[UsageRecord]:
        """The last ``limit`` records, oldest first. Call it on the event loop."""
        if self.catch_up is not None:
            self.catch_up()
        return list(self._records)[-limit:]
