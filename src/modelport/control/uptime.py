"""Replica uptime: how long each revision's replicas ran, on which hardware, for self-hosted cost.

A replica slot's interval opens when the backend deploys it and closes when the backend has
stopped it, whatever happens in between (a crashed worker restarting still holds its
hardware). While intervals are open, their ``seen_at`` is advanced every minute; if the
server dies without closing them (SIGKILL, power loss), the next start closes each at its
``seen_at``: the last time it was known to run. The cost of the unknown tail (at most one
heartbeat) is not charged, rather than charging a guess.

Writes happen on one background thread, in the order the backend reported them, so the
event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelport.store import Database
from modelport.store.tables import EndpointRow, ReplicaUptimeRow

__all__ = ["DEFAULT_HARDWARE", "ReplicaUptime", "hardware_of"]

log = logging.getLogger("modelport.control.uptime")

DEFAULT_HARDWARE = "cpu"


def hardware_of(intent: dict[str, Any] | None) -> str:
    """The hardware type an endpoint's replicas are priced as: its intent's
    ``resources.hardware``; ``auto`` or none at all is ``cpu`` (what the local backend runs)."""
    resources = (intent or {}).get("resources") or {}
    hardware = resources.get("hardware") if isinstance(resources, dict) else None
    if not isinstance(hardware, str) or hardware.strip().lower() in ("", "auto"):
        return DEFAULT_HARDWARE
    return hardware.strip().lower()  # as prices name it: "A100" is priced as "a100"


class ReplicaUptime:
    """Records replica intervals in ``replica_uptime`` as the backend starts and stops them."""

    def __init__(self, db: Database, *, heartbeat_s: float = 60.0) -> None:
        self.db = db
        self.heartbeat_s = heartbeat_s
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uptime")
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Close what a previous run left open, then keep open intervals' ``seen_at`` fresh.
        Call before any replica is deployed."""
        closed = await asyncio.to_thread(self.recover)
        if closed:
            log.warning("closed %d replica interval(s) left open by the last run", closed)
        self._heartbeat = asyncio.create_task(self._beat())

    def recover(self) -> int:
        """Close every open interval at its ``seen_at``; how many there were."""
        with self.db.session() as session:
            result = session.execute(
                update(ReplicaUptimeRow)
                .where(ReplicaUptimeRow.stopped_at.is_(None))
                .values(stopped_at=ReplicaUptimeRow.seen_at)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def set_replicas(self, group: str, count: int) -> None:
        """The backend now runs ``count`` replicas of ``group`` (``endpoint@r2``). Called on the
        event loop: the write is queued, stamped with the time of the call."""
        endpoint, _, revision = group.rpartition("@")
        at = datetime.now(UTC)
        future = self._writer.submit(self._apply, endpoint, revision, count, at)
        future.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop the heartbeat and finish every queued write (after the backend closed)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await asyncio.to_thread(self._writer.shutdown, wait=True)

    def _apply(self, endpoint: str, revision: str, count: int, at: datetime) -> None:
        with self.db.session() as session:
            open_rows = session.scalars(
                select(ReplicaUptimeRow).where(
                    ReplicaUptimeRow.endpoint == endpoint,
                    ReplicaUptimeRow.revision == revision,
                    ReplicaUptimeRow.stopped_at.is_(None),
                )
            ).all()
            running = set()
            for row in open_rows:
                if row.replica >= count:
                    row.stopped_at = row.seen_at = at
                else:
                    running.add(row.replica)
            missing = [i for i in range(count) if i not in running]
            if not missing:
                return
            hardware = _endpoint_hardware(session, endpoint)
            session.add_all(
                ReplicaUptimeRow(
                    endpoint=endpoint,
                    revision=revision,
                    replica=i,
                    hardware=hardware,
                    started_at=at,
                    seen_at=at,
                )
                for i in missing
            )

    def _touch(self) -> None:
        with self.db.session() as session:
            session.execute(
                update(ReplicaUptimeRow)
                .where(ReplicaUptimeRow.stopped_at.is_(None))
                .values(seen_at=datetime.now(UTC))
            )

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await loop.run_in_executor(self._writer, self._touch)
            except Exception:  # a database hiccup must not end the heartbeat
                log.exception("could not record replica uptime")


def _endpoint_hardware(session: Session, endpoint: str) -> str:
    intent = session.scalar(select(EndpointRow.intent).where(EndpointRow.name == endpoint))
    return hardware_of(intent)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record replica uptime", exc_info=future.exception())
