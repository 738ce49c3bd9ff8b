"""Per-endpoint locks, and database work run off the event loop.

Changes to one endpoint are serialised by its own lock, so that different endpoints never wait
on each other; the locks are created on first use and live as long as their owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from modelport.store import Database

__all__ = ["EndpointLocks", "in_session"]

T = TypeVar("T")


class EndpointLocks:
    """One asyncio lock per endpoint name."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, name: str) -> asyncio.Lock:
        """The endpoint's lock, created on first use."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock


async def in_session(db: Database, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one session (committed if it returns) in a thread, off the loop."""

    def run() -> T:
        with db.session() as session:
            return work(session)

    return await asyncio.to_thread(run)
