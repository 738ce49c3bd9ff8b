"""The local backend: each replica is a separate worker process on this machine.

The supervisor owns each replica's listening socket and hands it to the worker by file
descriptor, so a restarted worker keeps its address. It probes readiness, gates traffic on
it, restarts crashed or hung workers with exponential backoff, and drains on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Callable
from pathlib import Path

from modelport.backends.base import Backend, ReplicaStatus
from modelport.core.enums import ReplicaState
from modelport.core.replica import ReplicaSpec
from modelport.core.routing import Upstream
from modelport.runtimes import ModelRuntime, runtime_class
from modelport.runtimes.registry import EXTERNAL_SERVERS

__all__ = ["LocalBackend"]

log = logging.getLogger("modelport.backends.local")

_UNHEALTHY_AFTER = 3  # failed probes in a row before a ready replica stops getting traffic
_MAX_BACKOFF_S = 30.0


async def _probe(upstream: Upstream, path: str, limit_s: float) -> bool:
    """True if the replica answers ``GET path`` (its readiness check) with 200."""
    try:
        async with asyncio.timeout(limit_s):
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nhost: replica\r\n\r\n".encode())
                status_line = await reader.readline()
            finally:
                writer.close()
        return status_line[9:12] == b"200"
    except (OSError, TimeoutError):
        return False


def _tail(path: Path, lines: int = 5) -> str | None:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return "\n".join(text[-lines:]) or None


class _Replica:
    def __init__(
        self, spec: ReplicaSpec, index: int, token: bytes, log_path: Path, log_level: str
    ) -> None:
        self.spec = spec
        self.index = index
        self._token = token
        self._log_path = log_path
        self._log_level = log_level
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.set_inheritable(True)
        self.upstream = Upstream("127.0.0.1", self.sock.getsockname()[1])
        self.readiness_path = (
            runtime_class(spec.runtime).readiness_path
            if spec.runtime in EXTERNAL_SERVERS
            else ModelRuntime.readiness_path
        )
        self.process: Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.state = ReplicaState.STARTING
        self.restarts = 0
        self.failures = 0
        self.started_at = 0.0
        self.next_start_at = 0.0
        self.last_error: str | None = None

    async def launch(self, on_exit: Callable[[_Replica], None]) -> None:
        env = dict(os.environ)
        env.update(
            MODELPORT_WORKER_SPEC=self.spec.model_dump_json(),
            MODELPORT_WORKER_TOKEN=self._token.decode(),
            MODELPORT_WORKER_FD=str(self.sock.fileno()),
            MODELPORT_LOG_LEVEL=self._log_level,
        )
        command = [sys.executable, "-m", "modelport.worker"]
        external = None
        if self.spec.runtime in EXTERNAL_SERVERS:
            external = runtime_class(self.spec.runtime).replica_command(
                self.spec, self.upstream.host, self.upstream.port, self._token.decode()
            )
        if external is not None:
            # An external server binds its own port: free ours for it (same number).
            self.sock.close()
            command = external
        with self._log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                pass_fds=(self.sock.fileno(),) if external is None else (),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is the server's to handle
            )
        self.state = ReplicaState.STARTING
        self.started_at = time.monotonic()
        self._watcher = asyncio.create_task(self._watch(self.process, on_exit))
        log.info("started replica %s/%d pid %d", self.spec.group, self.index, self.process.pid)

    async def _watch(self, process: Process, on_exit: Callable[[_Replica], None]) -> None:
        # Waiting on the process (not polling) takes a crashed replica out of routing at once.
        await process.wait()
        if self.process is process:
            self.crashed(time.monotonic())
            on_exit(self)

    def crashed(self, now: float) -> None:
        code = self.process.returncode if self.process else None
        self.last_error = f"exited with code {code}: {_tail(self._log_path) or 'no output'}"
        self.process = None
        self.restarts += 1
        self.state = ReplicaState.RESTARTING
        self.next_start_at = now + min(_MAX_BACKOFF_S, 0.5 * 2 ** min(self.restarts - 1, 6))
        log.warning("replica %s/%d %s", self.spec.group, self.index, self.last_error)

    def kill(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.kill()

    async def stop(self, grace_s: float) -> None:
        process, self.process = self.process, None
        self.state = ReplicaState.STOPPED
        if process and process.returncode is None:
            process.send_signal(signal.SIGTERM)  # uvicorn finishes in-flight requests
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.sock.close()

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            index=self.index,
            state=self.state,
            pid=self.process.pid if self.process else None,
            address=f"{self.upstream.host}:{self.upstream.port}",
            restarts=self.restarts,
            last_error=self.last_error,
        )


class LocalBackend(Backend):
    """Supervises worker processes on this machine."""

    def __init__(
        self,
        *,
        logs_dir: Path,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 5.0,
        start_timeout_s: float = 120.0,
        drain_timeout_s: float = 15.0,
        log_level: str = "info",
    ) -> None:
        self._logs_dir = logs_dir
        self._interval = health_interval_s
        self._probe_timeout = health_timeout_s
        self._start_timeout = start_timeout_s
        self._drain_timeout = drain_timeout_s
        self._log_level = log_level
        self._replicas: dict[str, list[_Replica]] = {}
        self._ready: dict[str, tuple[Upstream, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def deploy(self, spec: ReplicaSpec, replicas: int, token: bytes) -> None:
        group = spec.group
        old = self._replicas.get(group, [])
        if old and old[0].spec == spec and len(old) == replicas:
            return
        self._logs_dir.mkdir(parents=True, exist_ok=True)
        self._replicas[group] = [
            _Replica(spec, i, token, self._logs_dir / f"{group}-{i}.log", self._log_level)
            for i in range(replicas)
        ]
        self._publish(group)
        for replica in old:
            await replica.stop(self._drain_timeout)
        self._wake.set()

    async def remove(self, group: str) -> None:
        replicas = self._replicas.pop(group, [])
        self._publish(group)
        await asyncio.gather(*(r.stop(self._drain_timeout) for r in replicas))

    def ready(self, group: str) -> tuple[Upstream, ...]:
        return self._ready.get(group, ())

    def status(self, group: str) -> list[ReplicaStatus]:
        return [replica.status() for replica in self._replicas.get(group, [])]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="modelport-supervisor")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        groups = list(self._replicas)
        await asyncio.gather(*(self.remove(group) for group in groups))

    def _publish(self, group: str) -> None:
        ready = tuple(
            r.upstream for r in self._replicas.get(group, []) if r.state == ReplicaState.READY
        )
        if ready != self._ready.get(group, ()):
            self._ready[group] = ready
            self.on_change()

    async def _supervise(self) -> None:
        while True:
            try:
                await self._check_all()
            except Exception:  # the supervisor must outlive any one bad replica
                log.exception("supervisor pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def _check_all(self) -> None:
        now = time.monotonic()
        probes: list[tuple[_Replica, asyncio.Task[bool]]] = []
        for replicas in list(self._replicas.values()):
            for replica in replicas:
                if replica.process is None:
                    if now >= replica.next_start_at:
                        await replica.launch(self._exited)
                elif replica.process.returncode is None:
                    probe = _probe(replica.upstream, replica.readiness_path, self._probe_timeout)
                    task = asyncio.create_task(probe)
                    probes.append((replica, task))
        for replica, task in probes:
            self._judge(replica, await task, now)
        for group in list(self._replicas):
            self._publish(group)

    def _exited(self, replica: _Replica) -> None:
        self._publish(replica.spec.group)
        self._wake.set()

    def _judge(self, replica: _Replica, healthy: bool, now: float) -> None:
        if replica.process is None:  # stopped while the probe ran
            return
        if healthy:
            replica.state = ReplicaState.READY
            replica.failures = 0
            return
        if replica.state == ReplicaState.STARTING:
            if now - replica.started_at > self._start_timeout:
                log.warning("replica %s/%d not ready in time", replica.spec.group, replica.index)
                replica.kill()  # the watcher records the exit and schedules the restart
            return
        replica.failures += 1
        if replica.failures >= _UNHEALTHY_AFTER:
            replica.state = ReplicaState.UNHEALTHY
        if replica.failures >= 2 * _UNHEALTHY_AFTER:  # hung: the watcher restarts it
            replica.kill()
