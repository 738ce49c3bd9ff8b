"""How long a usage report over a month takes, from minute, hour and day rollups.

Stores a month of traffic (every minute of 30 days, for ``--combinations`` customer x
endpoint combinations) into a fresh SQLite database through the loader's own code, then times
``report(by=customer, since=30d)`` and a 90-minute report. Run: ``python -m bench.usage_query``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelport.control import usage as reports
from modelport.control.usage_loader import store_batch
from modelport.core.usage import Units, UsageRecord
from modelport.store import Database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--combinations", type=int, default=10)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as directory:
        db = Database(f"sqlite:///{Path(directory) / 'bench.db'}")
        db.migrate()
        started = time.perf_counter()
        start = now - timedelta(days=args.days)
        minutes = args.days * 24 * 60
        for first in range(0, minutes, 1440):
            batch = [
                UsageRecord(
                    request_id="r",
                    endpoint=f"ep{n % 3}",
                    revision="r1",
                    key_id="k",
                    project="p",
                    customer=f"c{n}",
                    status=200,
                    latency_ms=5.0,
                    units=Units(rows=1),
                    at=(start + timedelta(minutes=minute)).timestamp(),
                )
                for minute in range(first, min(first + 1440, minutes))
                for n in range(args.combinations)
            ]
            with db.session() as session:
                store_batch(session, batch)
        print(
            f"stored {minutes * args.combinations} events of {args.days} days "
            f"in {time.perf_counter() - started:.1f} s"
        )
        for since in (f"{args.days}d", "90m"):
            with db.session() as session:
                began = time.perf_counter()
                result = reports.report(session, by="customer", since=since, now=now)
                took = time.perf_counter() - began
            pieces = ", ".join(p["granularity"] for p in result["pieces"])
            print(
                f"report by customer since {since}: {len(result['rows'])} rows, "
                f"{result['total']['requests']} requests, {took * 1000:.1f} ms ({pieces})"
            )
        db.close()


if __name__ == "__main__":
    main()
