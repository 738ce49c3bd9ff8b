"""Logging now; metrics, usage and drift in later issues."""

from modelport.observability.logs import configure_logging

__all__ = ["configure_logging"]
