"""What an endpoint did over a window, as the store recorded it: the input of
``modelport recommend`` (``control/recommend.py``).

Sums and the busiest minute come from the minute usage rollups (kept for good, so the sums
are exact); the p95 from the raw usage events (kept for the loader's retention, 30 days by
default).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelport.core.errors import InvalidRequest
from modelport.core.intent import Intent
from modelport.store.tables import EndpointRow, UsageEventRow, UsageRollupRow

__all__ = ["MAX_DAYS", "Observed", "check_days", "intent_of", "observe", "window"]

MAX_DAYS = 90.0
"""The longest window a recommendation reads (raw events, for the p95, are kept 30 days)."""


@dataclass(frozen=True, slots=True)
class Observed:
    """What an endpoint did over a window, as the store recorded it."""

    days: float
    requests: int = 0
    errors: int = 0
    slo_requests: int = 0
    slow: int = 0
    peak_rps: float = 0.0
    """The busiest minute's requests / 60."""
    mean_rps: float = 0.0
    latency_ms_mean: float | None = None
    upstream_ms_mean: float | None = None
    """Mean time in the model (the gateway's upstream time): what a replica spends."""
    p95_ms: float | None = None
    unit_cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def check_days(value: str | float | None) -> float:
    """The window in days from the query (default 7): a number in (0, 90]."""
    if value is None:
        return 7.0
    try:
        days = float(value)
    except (TypeError, ValueError):
        days = math.nan
    if not 0 < days <= MAX_DAYS:  # also NaN and inf
        raise InvalidRequest(
            f"days must be a number of days from more than 0 to {MAX_DAYS:g}, got {value!r}",
            param="days",
        )
    return days


def observe(session: Session, endpoint: str, start: datetime, end: datetime) -> Observed:
    """Traffic, errors, latency and unit cost of ``endpoint`` in ``[start, end)``.

    Sums and the peak come from the minute rollups (kept for good, so the sums are exact);
    the p95 from the raw events of successful requests in the window, as far as they are
    still kept."""
    table = UsageRollupRow
    query = (
        select(
            func.sum(table.requests),
            func.sum(table.errors),
            func.sum(table.slo_requests),
            func.sum(table.slow),
            func.sum(table.latency_ms_sum),
            func.sum(table.upstream_ms_sum),
            func.sum(table.cost_nanousd),
        )
        .where(
            table.granularity == "minute",
            table.bucket_start >= start,
            table.bucket_start < end,
            table.endpoint == endpoint,
        )
        .group_by(table.bucket_start)
    )
    totals = [0.0] * 7
    busiest = 0
    for row in session.execute(query):
        # PostgreSQL sums integers as Decimal: every sum becomes a float before arithmetic.
        values = [float(value or 0) for value in row]
        totals = [total + value for total, value in zip(totals, values, strict=True)]
        busiest = max(busiest, int(values[0]))
    requests, errors, slo_requests, slow, latency, upstream, cost = totals
    seconds = max((end - start).total_seconds(), 1.0)
    return Observed(
        days=round(seconds / 86_400, 6),
        requests=int(requests),
        errors=int(errors),
        slo_requests=int(slo_requests),
        slow=int(slow),
        peak_rps=busiest / 60.0,
        mean_rps=int(requests) / seconds,
        latency_ms_mean=latency / requests if requests else None,
        upstream_ms_mean=upstream / requests if requests else None,
        p95_ms=_p95(session, endpoint, start, end),
        unit_cost_usd=int(cost) / 1e9,
    )


def _p95(session: Session, endpoint: str, start: datetime, end: datetime) -> float | None:
    """The 95th percentile latency of successful requests (nearest rank), or None."""
    where = (
        UsageEventRow.endpoint == endpoint,
        UsageEventRow.at >= start,
        UsageEventRow.at < end,
        UsageEventRow.status < 400,
    )
    count = session.scalar(select(func.count()).select_from(UsageEventRow).where(*where)) or 0
    if not count:
        return None
    rank = math.ceil(0.95 * count) - 1
    value = session.scalar(
        select(UsageEventRow.latency_ms)
        .where(*where)
        .order_by(UsageEventRow.latency_ms)
        .offset(rank)
        .limit(1)
    )
    return None if value is None else float(value)


def intent_of(row: EndpointRow) -> tuple[Intent, str | None]:
    """The endpoint's applied intent or, for one created without an intent (or whose stored
    intent no longer parses), the intent that describes what runs, with a note saying so."""
    if row.intent is not None:
        try:
            return Intent.model_validate(row.intent), None
        except ValidationError as exc:
            note = (
                f"the stored intent does not parse ({exc.error_count()} problem(s)): the diffs "
                "are against an intent that describes what runs"
            )
    else:
        note = (
            "no intent was applied to this endpoint: the diffs are against an intent that "
            "describes what runs (modelport init writes one to start from)"
        )
    described = Intent.model_validate(
        {
            "endpoint": row.name,
            "task": row.version.model.task,
            "model": row.model_ref,
            "resources": {"replicas": max(row.replicas, 1)},
            "batching": row.batching,
        }
    )
    return described, note


def window(days: float, now: datetime | None = None) -> tuple[datetime, datetime]:
    """``[now - days, now)``, with ``now`` floored to the minute the rollups are kept in."""
    end = (now or datetime.now(UTC)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return end - timedelta(days=days), end
