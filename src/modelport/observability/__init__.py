"""Logging, the recent-usage ring, per-revision SLO windows and shadow comparisons; metrics,
the usage journal and drift come in later issues."""

from modelport.observability.logs import configure_logging
from modelport.observability.shadow import ShadowComparison, ShadowReports
from modelport.observability.usage import RecentUsage, UsageSink
from modelport.observability.windows import RevisionWindows, WindowStats

__all__ = [
    "RecentUsage",
    "RevisionWindows",
    "ShadowComparison",
    "ShadowReports",
    "UsageSink",
    "WindowStats",
    "configure_logging",
]
