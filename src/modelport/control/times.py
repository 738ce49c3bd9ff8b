"""The times a report may be asked for: ``since=24h``, ``until=2026-11-01``, ``since=month``.

One parser for every report (usage, cost), so each takes the same spellings and refuses the
same mistakes with the same 400.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from modelport.core.errors import InvalidRequest

__all__ = ["parse_time"]

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_AGO_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# From the epoch on, and not so far ahead that rounding up to a whole day overflows.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_time(value: str, param: str, now: datetime) -> datetime:
    """``90m``/``24h``/``7d``/``2w`` before ``now``, ``month`` (the start of this UTC month),
    ``today`` (the start of this UTC day), or an ISO 8601 date or time (UTC if it has no
    zone); anything else is a 400 naming ``param``."""
    text = value.strip()
    moment: datetime | None = None
    try:
        if match := _AGO.match(text):
            moment = now - timedelta(seconds=float(match[1]) * _AGO_SECONDS[match[2]])
        elif text == "month":
            moment = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        elif text == "today":
            moment = now.replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            parsed = datetime.fromisoformat(text)
            moment = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        moment = None
    if moment is None or not _EARLIEST <= moment <= _LATEST:
        raise InvalidRequest(
            f"{param} {value[:64]!r} is not a time: give a duration ago such as 90m, 24h or 7d, "
            "'month', 'today', or an ISO 8601 date or time after 1970 such as 2026-11-01",
            param=param,
        )
    return moment
