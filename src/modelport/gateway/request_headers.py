"""What a client says about its call in headers the gateway reads before routing: its
request id (``X-Request-Id``) and the deadline it asks for (``X-Modelport-Timeout``).

Both come from outside: an odd value is either replaced (the id) or refused with a 400
naming the header (the timeout), never let through to logs, meters or replicas.
"""

from __future__ import annotations

from modelport.core.errors import InvalidRequest

__all__ = ["MAX_ID", "TIMEOUT_HEADER", "client_id", "client_timeout"]

# The longest request id or customer name the gateway keeps (logged, metered, echoed back).
MAX_ID = 128
TIMEOUT_HEADER = b"x-modelport-timeout"


def client_id(value: bytes | None) -> bytes | None:
    """A client's request id if it is short printable ASCII; otherwise the gateway makes one.
    Ids are logged, metered and echoed back: an odd one must not break any of that."""
    if value and len(value) <= MAX_ID and value.isascii() and value.decode().isprintable():
        return value
    return None


def client_timeout(value: bytes) -> float:
    """The deadline a client asked for with ``X-Modelport-Timeout`` (seconds); it can only
    shorten the endpoint's."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise InvalidRequest(
            "header X-Modelport-Timeout must be a positive number of seconds",
            param="X-Modelport-Timeout",
        )
    return seconds
