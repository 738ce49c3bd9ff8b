"""The usage journal: every metered request, appended to a local file before it is answered.

Durability without slowing the hot path: :meth:`UsageJournal.record` serializes one record
to one JSON line and hands it to the kernel with one ``write`` on an ``O_APPEND`` descriptor.
Once ``write`` returns, the line survives the process being killed (the page cache belongs
to the kernel); an ``fsync`` from a background thread, at most once a second, bounds what a
power loss can take. No lock and no await on the request path.

Files are segments named by their creation time (``<ns>.jsonl``), so sorting names sorts
them; a process always starts a new segment (never appends after what may be a torn last
line of a crashed one) and rotates to a new one past ``segment_bytes``. The segment being
written is locked (``flock``): the loader (``control/usage_loader.py``, in a process of its
own) reads segments into the database and deletes those no journal holds any more.

Fan-out: consumers (the recent-usage ring, metrics) subscribe and get the records written
since their last call, on the event loop, every ``fanout_interval_s``: never per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson

from modelport.core.usage import UsageRecord

__all__ = [
    "SEGMENT_SUFFIX",
    "UsageConsumer",
    "UsageJournal",
    "complete_lines",
    "is_written",
    "iter_records",
    "segments",
]

log = logging.getLogger("modelport.usage")

SEGMENT_SUFFIX = ".jsonl"
UsageConsumer = Callable[[Sequence[UsageRecord]], None]
_LOST_LOG_EVERY_S = 10.0


def segments(directory: Path) -> list[Path]:
    """The journal's segment files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The whole lines in ``data`` and how many bytes they take.

    A tail without its newline is a line still being written (or torn by a crash): it is left
    for later, never parsed half-way."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        return [], 0
    return data[: end - 1].split(b"\n"), end


def is_written(segment: Path) -> bool:
    """Whether a journal, in this process or another, still writes ``segment`` (it holds
    the segment's lock until it moves on to the next one, or dies)."""
    try:
        fd = os.open(segment, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock, if this probe took it
    return False


class UsageJournal:
    """Appends usage records to segment files; fsyncs and fans them out off the hot path.

    Implements ``UsageSink``. Create it anywhere; :meth:`start` (on the event loop) begins
    the fsync thread and the fan-out; :meth:`close` flushes, fans out and fsyncs the rest.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync_interval_s: float = 1.0,
        fanout_interval_s: float = 0.25,
    ) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._fsync_interval_s = fsync_interval_s
        self._fanout_interval_s = fanout_interval_s
        self._fd = -1
        self._segment: Path | None = None
        self._written = 0
        self._dirty = False
        # Descriptors of rotated segments: the fsync thread syncs and closes them, so the
        # loop never closes a descriptor the thread may be syncing.
        self._retired: list[int] = []
        self._consumers: list[UsageConsumer] = []
        self._pending: list[UsageRecord] = []
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self._fanout: asyncio.Task[None] | None = None
        self.lost = 0  # records that could not be written (a full disk)
        self._lost_logged_at = -_LOST_LOG_EVERY_S

    @property
    def active_segment(self) -> str | None:
        """The name of the segment being written now (the loader never deletes it)."""
        segment = self._segment
        return segment.name if segment is not None else None

    def subscribe(self, consumer: UsageConsumer) -> None:
        """Call ``consumer(records)`` on the event loop with each batch of new records.

        It must be quick (it runs on the loop the gateway serves from): hand heavy work to
        a thread. An exception it raises is logged and does not reach other consumers."""
        self._consumers.append(consumer)

    def record(self, record: UsageRecord) -> None:
        """Write one record's line. Runs on the request path: one dumps, one write."""
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError as exc:  # an upstream reported units past 64 bits
            self._lost(exc)
            return
        try:
            if self._fd < 0 or self._written >= self._segment_bytes:
                self._rotate()
            written = os.write(self._fd, line)
            while written < len(line):  # a regular file writes it all, short of a full disk
                written += os.write(self._fd, line[written:])
        except OSError as exc:
            # A full or failing disk must not fail the request too: it is answered, and the
            # loss is counted and said loudly (at most every few seconds).
            self._lost(exc)
        else:
            self._written += written
            self._dirty = True
        if self._consumers:
            self._pending.append(record)

    def _lost(self, error: Exception) -> None:
        self.lost += 1
        now = time.monotonic()
        if now - self._lost_logged_at >= _LOST_LOG_EVERY_S:
            self._lost_logged_at = now
            log.error(
                "usage journal write failed (%s): %d usage event(s) lost so far", error, self.lost
            )

    def _rotate(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Nanoseconds keep names unique and sortable; a clash (two rotations in one tick)
        # only moves the name on.
        stamp = time.time_ns()
        while True:
            segment = self.directory / f"{stamp:020d}{SEGMENT_SUFFIX}"
            try:
                fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                break
            except FileExistsError:
                stamp += 1
        # The lock says "still being written" to the loader, in whatever process it runs; the
        # kernel drops it when the descriptor closes, a SIGKILL included.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self._fd >= 0:
            self._retired.append(self._fd)
        self._fd, self._segment, self._written = fd, segment, 0
        self._dirty = True  # the new file's directory entry is synced with it

    async def start(self) -> None:
        """Open a fresh segment and begin fsyncing (thread) and fanning out (loop task)."""
        if self._fd < 0:
            self._rotate()
        if self._syncer is None:
            self._stop.clear()
            self._syncer = threading.Thread(
                target=self._sync_forever, name="usage-journal-fsync", daemon=True
            )
            self._syncer.start()
        if self._fanout is None:
            self._fanout = asyncio.create_task(self._fan_out_forever())

    async def close(self) -> None:
        """Deliver what consumers have not seen, fsync everything, close the files."""
        if self._fanout is not None:
            self._fanout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fanout
            self._fanout = None
        self.fan_out()
        self._stop.set()
        if self._syncer is not None:
            await asyncio.to_thread(self._syncer.join)
            self._syncer = None
        self._sync_once()
        fd, self._fd, self._segment = self._fd, -1, None
        if fd >= 0:
            os.close(fd)

    def fan_out(self) -> None:
        """Hand the records since the last call to every consumer (on the event loop)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        for consumer in self._consumers:
            try:
                consumer(batch)
            except Exception:
                log.exception("a usage consumer failed; it misses %d record(s)", len(batch))

    async def _fan_out_forever(self) -> None:
        while True:
            await asyncio.sleep(self._fanout_interval_s)
            self.fan_out()

    def _sync_forever(self) -> None:
        while not self._stop.wait(self._fsync_interval_s):
            try:
                self._sync_once()
            except OSError:
                log.exception("fsync of the usage journal failed; retrying in a second")

    def _sync_once(self) -> None:
        # Read the descriptor before the retired ones: a rotation in between retires it, and
        # only this thread closes retired descriptors, after syncing them.
        if self._dirty:
            self._dirty = False
            fd = self._fd
            if fd >= 0:
                os.fsync(fd)
                _sync_directory(self.directory)
        while self._retired:
            retired = self._retired.pop(0)
            os.fsync(retired)
            os.close(retired)


def _sync_directory(directory: Path) -> None:
    """Make new segments' names durable too (their data is synced on their descriptor)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_records(lines: Sequence[bytes]) -> Iterator[UsageRecord | None]:
    """Each line parsed, or ``None`` (after logging it) for one that is not a usage record."""
    for line in lines:
        if not line.strip():
            yield None
            continue
        try:
            data = orjson.loads(line)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            yield UsageRecord.from_dict(data)
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
            log.warning("skipping a usage journal line that is not a usage record (%s)", exc)
            yield None
