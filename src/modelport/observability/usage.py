"""Where the gateway hands each request's usage. The durable journal comes with metering;
for now the last requests are kept in memory and shown at ``/api/v1/usage/recent``."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from modelport.core.usage import UsageRecord

__all__ = ["RecentUsage", "UsageSink"]


class UsageSink(Protocol):
    def record(self, record: UsageRecord) -> None:
        """Take one request's usage. Must not block: it runs on the request path."""


class RecentUsage:
    """Keeps the most recent records in a bounded ring."""

    def __init__(self, size: int = 1000) -> None:
        self._records: deque[UsageRecord] = deque(maxlen=size)

    def record(self, record: UsageRecord) -> None:
        self._records.append(record)

    def recent(self, limit: int = 100) -> list[UsageRecord]:
        return list(self._records)[-limit:]
