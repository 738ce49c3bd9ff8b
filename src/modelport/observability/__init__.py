"""Stage 4's pure parts: logs and traces, the usage journal and recent-usage ring, metrics,
per-revision SLO windows, error-budget math, alerts, drift statistics and sampling, price
arithmetic, shadow comparisons. Nothing here touches the database: that is ``control``'s."""

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
