"""The usage loader in a process of its own, started and watched by the server.

Why a process: the loader spends tens of microseconds of Python per event (parsing, pricing,
rolling up). In a thread of the server it holds the interpreter lock the gateway serves
with, and measured side by side that took a fifth of the gateway's throughput; in its own
process, at a lower CPU priority, it takes none of it, and it still keeps up (its work is
batched, and the journal holds whatever it has not loaded yet).

The process reads its spec (database URL, journal directory, cadence, retention, logging) as
one JSON object on stdin, never in argv (a database URL may hold a password). It re-reads
prices and SLO latency targets from the database at the start of every pass, and stops after
one last pass on SIGTERM, or when the server that started it is gone. One loader runs per
journal directory: a second one (from a server that was killed and restarted while its
loader still finished) waits for the first to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from modelport.control import endpoints as endpoint_service
from modelport.control import prices as price_catalog
from modelport.control.slo import spec_of
from modelport.control.usage_loader import UsageLoader
from modelport.observability.logs import configure_logging
from modelport.observability.pricing import PriceBook
from modelport.store import Database

__all__ = ["UsageLoaderProcess", "main"]

log = logging.getLogger("modelport.usage")

_NICENESS = 10  # below the gateway and the replicas, without starving under load
_STOP_TIMEOUT_S = 60.0
_RESTART_DELAY_S = 1.0
_LOCK_SUFFIX = ".loader-lock"  # beside the journal directory, which holds only segments


class UsageLoaderProcess:
    """Starts the loader process, restarts it if it dies, and stops it after a last pass."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spec = orjson.dumps(dict(spec))
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._process = await self._spawn()
        self._watcher = asyncio.create_task(self._watch())

    async def _spawn(self) -> asyncio.subprocess.Process:
        # A session of its own: a signal to the server's process group (a Ctrl-C, a service
        # manager's SIGTERM) reaches the server, which stops the loader after the journal's
        # last line; a loader whose server is killed notices and stops by itself.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelport.control.usage_process",
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdin is not None
        process.stdin.write(self._spec)
        await process.stdin.drain()
        process.stdin.close()
        return process

    async def _watch(self) -> None:
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            # The journal keeps every event it has not loaded: a new loader resumes from the
            # stored offsets.
            log.error("the usage loader exited with %s; starting it again", code)
            await asyncio.sleep(_RESTART_DELAY_S)
            if not self._stopping:
                self._process = await self._spawn()

    async def close(self) -> None:
        """SIGTERM: the loader makes one last pass (call after the journal is closed, so it
        loads every event to the end), then exits; killed if it takes too long."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("the usage loader did not stop in %g s; killed", _STOP_TIMEOUT_S)
            process.kill()
            await process.wait()


class _FromDatabase:
    """Prices and latency targets as the database holds them, re-read before each pass."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.prices = PriceBook()
        self._targets: Mapping[str, float] = {}

    def refresh(self) -> None:
        price_catalog.refresh(self.db, self.prices)
        targets = {}
        with self.db.session() as session:
            for row in endpoint_service.list_endpoints(session):
                spec = spec_of(row)
                if spec is not None and spec.latency_target_ms is not None:
                    targets[row.name] = spec.latency_target_ms
        self._targets = targets

    def latency_target_ms(self, endpoint: str) -> float | None:
        return self._targets.get(endpoint)


def _hold_lock(directory: Path, stop: threading.Event) -> int | None:
    """The directory's loader lock, waiting while another loader holds it; ``None`` if told
    to stop first."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory.with_name(directory.name + _LOCK_SUFFIX), os.O_RDWR | os.O_CREAT, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if stop.wait(0.5):
                os.close(fd)
                return None


def main() -> None:
    spec = orjson.loads(sys.stdin.buffer.read())
    configure_logging(spec.get("log_level", "info"), spec.get("log_format", "text"))
    os.nice(_NICENESS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    directory = Path(spec["directory"])
    if _hold_lock(directory, stop) is None:
        return  # stopped while another loader still held the directory
    db = Database(spec["database_url"])
    source = _FromDatabase(db)
    loader = UsageLoader(
        db,
        directory,
        cost_of=source.prices.cost_of,
        latency_target_ms=source.latency_target_ms,
        refresh=source.refresh,
        retention_days=spec["retention_days"],
    )
    try:
        while not stop.wait(spec["interval_s"]):
            if os.getppid() != parent:
                log.warning("the server that started the usage loader is gone; stopping")
                break
            loader.load_logged()
        loader.load_logged()  # what the journal holds up to now
    finally:
        db.close()


if __name__ == "__main__":
    main()
