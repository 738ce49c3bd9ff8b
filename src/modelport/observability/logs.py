"""Log setup for every process (server and replicas): text for a terminal, or one JSON object
per line for a log pipeline (``MODELPORT_LOG_FORMAT=json``).

A JSON line carries ``time``, ``level``, ``logger``, ``message``, the ``request_id`` of the
request it concerns (the gateway and the worker bind it per request in a context variable, so
every line logged while serving that request has it), and ``trace_id``/``span_id`` when tracing
is on. Secrets never reach a log line: keys and tokens are not logged anywhere.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

from modelport.observability import tracing

__all__ = ["LOG_FORMATS", "JsonFormatter", "bind_request", "configure_logging", "request_id"]

LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Bytes as the gateway has them: decoding waits until a line is actually logged.
_REQUEST_ID: ContextVar[bytes | None] = ContextVar("modelport_request_id", default=None)


def bind_request(request_id: bytes | None) -> None:
    """Tag what this task (and the tasks it starts) logs from now on with ``request_id``.

    Each request runs in a task of its own, so the id never leaks into another request's."""
    _REQUEST_ID.set(request_id)


def request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    value = _REQUEST_ID.get()
    return value.decode(errors="replace") if value else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks included, escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{moment}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id()
        if current is not None:
            entry["request_id"] = current
        if tracing.ENABLED:
            ids = tracing.current_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log at ``level`` to standard error, as text or JSON lines (``log_format``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
