"""Logging now; metrics, usage and drift in later issues."""

from modelport.observability.logs import configure_logging
from modelport.observability.usage import RecentUsage, UsageSink

__all__ = ["RecentUsage", "UsageSink", "configure_logging"]
