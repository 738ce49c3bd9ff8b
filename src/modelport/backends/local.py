"""The local backend: each replica is a separate worker process on this machine.

The supervisor owns each replica's listening socket and hands it to the worker by file
descriptor, so a restarted worker keeps its address. Every replica has a supervision loop of
its own: it starts the worker (and backs off when it cannot), probes readiness, gates traffic
on it, restarts a crashed or hung worker, and drains it on stop. One replica that cannot even
be spawned, or that hangs its probes, therefore never holds up another's.
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
from dataclasses import dataclass
from pathlib import Path

from modelport.backends.base import Backend, ReplicaStatus
from modelport.backends.isolation import network_isolated
from modelport.core.enums import ReplicaState
from modelport.core.environment import minimal_environment
from modelport.core.replica import ReplicaLaunch, ReplicaSpec
from modelport.core.routing import Upstream
from modelport.runtimes import ModelRuntime, runtime_class
from modelport.runtimes.registry import EXTERNAL_SERVERS

__all__ = ["LocalBackend"]

log = logging.getLogger("modelport.backends.local")

# A replica scaled away leaves routing, then gets this long for requests that were routed to
# it under the previous snapshot to arrive, before its in-flight count is trusted to be zero.
_ROUTED_GRACE_S = 0.5
_UNHEALTHY_AFTER = 3  # failed probes in a row before a ready replica stops getting traffic
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class _Policy:
    interval_s: float  # between probes
    probe_timeout_s: float
    start_timeout_s: float  # from spawn to ready
    drain_timeout_s: float  # from SIGTERM to SIGKILL
    busy_grace_s: float  # how long a replica may miss probes while it computes
    log_level: str
    hidden_dir: Path | None  # what model code in a worker must not reach (the server's home)
    log_format: str  # "text" or "json", as the server's
    otlp_endpoint: str  # where workers export spans; empty: no tracing


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


def _cpu_seconds(pid: int) -> float | None:
    """CPU time a process (all its threads) has used, or None where /proc cannot tell."""
    try:
        # proc(5): utime and stime are fields 14 and 15; the name (field 2) may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of a replica's process group: a worker runs in a session of its
    own, and the processes it started (decoders, an external server's engine) die with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 5) -> str | None:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return "\n".join(text[-lines:]) or None


class _Replica:
    def __init__(
        self,
        spec: ReplicaSpec,
        index: int,
        token: bytes,
        log_path: Path,
        policy: _Policy,
        publish: Callable[[], None],
    ) -> None:
        self.spec = spec
        self.index = index
        self._token = token
        self._log_path = log_path
        self._policy = policy
        self._publish = publish  # tells the backend that this replica's readiness may differ
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.set_inheritable(True)
        self.upstream = Upstream("127.0.0.1", self.sock.getsockname()[1])
        self._external = spec.runtime in EXTERNAL_SERVERS
        self.readiness_path = (
            runtime_class(spec.runtime).readiness_path
            if self._external
            else ModelRuntime.readiness_path
        )
        self.process: Process | None = None
        self._loop: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.state = ReplicaState.STARTING
        self.restarts = 0
        self.failures = 0
        self.started_at = 0.0
        self.next_start_at = 0.0
        self.last_error: str | None = None
        self._kill_reason: str | None = None
        self._cpu: float | None = None  # CPU seconds at the last probe
        self._busy_since: float | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.group}/{self.index}"

    def start(self) -> None:
        """Begin this replica's own supervision loop."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._supervise(), name=f"replica {self.name}")

    async def _supervise(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._step(time.monotonic())
                self._publish()
            except Exception:  # the loop must outlive any error of its replica
                log.exception("supervising replica %s failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._policy.interval_s)

    async def _step(self, now: float) -> None:
        if self.process is None:
            if now >= self.next_start_at:
                try:
                    await self._launch()
                except Exception as exc:  # say why, back off, and try again
                    self._failed(f"could not start: {type(exc).__name__}: {exc}", now)
        elif self.process.returncode is None:
            healthy = await _probe(self.upstream, self.readiness_path, self._policy.probe_timeout_s)
            self._judge(healthy, time.monotonic())

    async def _launch(self) -> None:
        token = self._token.decode()
        command = [sys.executable, "-m", "modelport.worker"]
        extra: dict[str, str] = {}
        launch: bytes | None = None
        external = None
        if self._external:
            runtime = runtime_class(self.spec.runtime)
            external = runtime.replica_command(
                self.spec, self.upstream.host, self.upstream.port, token
            )
            extra = runtime.replica_environment(self.spec, token)
        if external is not None:
            # An external server binds its own port: free ours for it (same number).
            self.sock.close()
            command = external
        else:
            launch = (
                ReplicaLaunch(
                    spec=self.spec,
                    token=token,
                    fd=self.sock.fileno(),
                    log_level=self._policy.log_level,
                    hidden_dir=self._policy.hidden_dir,
                    log_format=self._policy.log_format,
                    otlp_endpoint=self._policy.otlp_endpoint,
                )
                .model_dump_json()
                .encode()
            )
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log_file:
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    env=minimal_environment(os.environ, extra=extra),
                    pass_fds=(self.sock.fileno(),) if launch is not None else (),
                    stdin=subprocess.PIPE if launch is not None else subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal is the server's to handle
                )
            except OSError as exc:  # name the program: asyncio's error does not
                raise OSError(exc.errno, f"cannot run {command[0]!r}: {exc.strerror}") from exc
        self.process = process
        self.state = ReplicaState.STARTING
        self.started_at = time.monotonic()
        self._kill_reason = None
        self._cpu = self._busy_since = None
        self._watcher = asyncio.create_task(self._watch(process, launch))
        log.info("started replica %s pid %d", self.name, process.pid)

    async def _watch(self, process: Process, launch: bytes | None) -> None:
        if launch is not None and process.stdin is not None:
            try:  # the pipe holds 64 KB: write while the worker reads
                process.stdin.write(launch)
                await process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it exited before reading: the wait below reports why
            finally:
                process.stdin.close()
        # Waiting on the process (not polling) takes a crashed replica out of routing at once.
        await process.wait()
        _kill_group(process.pid)
        if self.process is process:
            code = process.returncode
            reason = self._kill_reason or f"exited with code {code}"
            self.process = None
            self._failed(f"{reason}: {_tail(self._log_path) or 'no output'}", time.monotonic())
            self._publish()
            self._wake.set()

    def _failed(self, error: str, now: float) -> None:
        self.last_error = error
        self.restarts += 1
        self.state = ReplicaState.RESTARTING
        self.next_start_at = now + min(_MAX_BACKOFF_S, 0.5 * 2 ** min(self.restarts - 1, 6))
        log.warning("replica %s %s", self.name, error)

    def _judge(self, healthy: bool, now: float) -> None:
        if self.process is None:  # stopped or exited while the probe ran
            return
        cpu = _cpu_seconds(self.process.pid)
        working = cpu is not None and self._cpu is not None and cpu > self._cpu
        self._cpu = cpu
        if healthy:
            if self.state != ReplicaState.READY and self.spec.isolation is not None:
                self._check_isolation(self.process.pid)
            self.state = ReplicaState.READY
            self.failures = 0
            self._busy_since = None
            return
        if self.state == ReplicaState.STARTING:
            if now - self.started_at > self._policy.start_timeout_s:
                self._kill(f"not ready within {self._policy.start_timeout_s:g} s")
            return
        if working:
            # Alive and computing (native code holding the GIL through a long request, say):
            # its requests wait in its queue, and a restart would lose them and the model's
            # load time. Bounded all the same: a replica spinning forever is hung.
            self._busy_since = self._busy_since or now
            if now - self._busy_since > self._policy.busy_grace_s:
                self._kill(
                    f"busy without answering its health probe for over "
                    f"{self._policy.busy_grace_s:g} s"
                )
            return
        self._busy_since = None
        self.failures += 1
        if self.failures >= _UNHEALTHY_AFTER:
            self.state = ReplicaState.UNHEALTHY
        if self.failures >= 2 * _UNHEALTHY_AFTER:
            self._kill(f"idle and not answering {self.failures} health probes in a row")

    def _kill(self, reason: str) -> None:
        """SIGKILL a hung worker; its watcher records the exit and schedules the restart."""
        if self.process and self.process.returncode is None:
            log.warning("killing replica %s: %s", self.name, reason)
            self._kill_reason = f"killed ({reason})"
            _kill_group(self.process.pid)

    async def stop(self, grace_s: float) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        process, self.process = self.process, None
        self.state = ReplicaState.STOPPED
        if process and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # uvicorn finishes in-flight requests
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace_s)
        if process:
            _kill_group(process.pid)
            await process.wait()
        self.sock.close()

    def _check_isolation(self, pid: int) -> None:
        # The worker isolates itself and starts anyway where the kernel refuses: say so where
        # operators look (the replica's status), not only in its log.
        assert self.spec.isolation is not None
        if self.spec.isolation.network == "none" and network_isolated(pid) is False:
            self.last_error = "isolation: network not isolated (the replica's log says why)"
            log.warning("replica %s: network not isolated", self.name)

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
    """Supervises worker processes on this machine. ``on_replicas(group, count)`` is called
    when a group's replicas are deployed (``count`` of them) and once they have all stopped
    (``0``): what replica uptime, and so self-hosted cost, is measured by."""

    on_replicas: Callable[[str, int], None] = staticmethod(lambda group, count: None)

    def __init__(
        self,
        *,
        logs_dir: Path,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 5.0,
        start_timeout_s: float = 120.0,
        drain_timeout_s: float = 15.0,
        busy_grace_s: float = 300.0,
        log_level: str = "info",
        hidden_dir: Path | None = None,
        log_format: str = "text",
        otlp_endpoint: str = "",
    ) -> None:
        """``hidden_dir``: a directory that model code in workers must not read or write
        (the server's home), where the operating system can enforce it."""
        self._logs_dir = logs_dir
        self._policy = _Policy(
            interval_s=health_interval_s,
            probe_timeout_s=health_timeout_s,
            start_timeout_s=start_timeout_s,
            drain_timeout_s=drain_timeout_s,
            busy_grace_s=busy_grace_s,
            log_level=log_level,
            hidden_dir=hidden_dir,
            log_format=log_format,
            otlp_endpoint=otlp_endpoint,
        )
        self._replicas: dict[str, list[_Replica]] = {}
        self._ready: dict[str, tuple[Upstream, ...]] = {}
        # What each group was deployed with, so that it can be scaled (from zero, too).
        self._deployed: dict[str, tuple[ReplicaSpec, bytes]] = {}
        # Replicas scaled away and still finishing their requests, by group.
        self._draining: dict[str, list[_Replica]] = {}
        self._started = False

    async def deploy(self, spec: ReplicaSpec, replicas: int, token: bytes) -> None:
        group = spec.group
        old = self._replicas.get(group, [])
        deployed = self._deployed.get(group)
        if deployed is not None and deployed[0] == spec and group in self._replicas:
            # The same revision again (brought back while it drained, say): the autoscaler
            # may have resized it, and what runs is kept; from zero, it starts again.
            if not old and replicas:
                await self.scale(group, replicas)
            return
        self._deployed[group] = (spec, token)
        self._replicas[group] = new = [self._replica(group, i) for i in range(replicas)]
        self._publish(group)
        await self._stop(old)
        self.on_replicas(group, replicas)
        if self._started:
            for replica in new:
                replica.start()

    async def scale(self, group: str, replicas: int) -> None:
        running = self._replicas.get(group)
        if running is None or replicas < 0:
            return  # removed meanwhile: nothing to scale
        if replicas > len(running):
            used = {r.index for r in running} | {r.index for r in self._draining.get(group, [])}
            free = (i for i in range(len(used) + replicas) if i not in used)
            added = [self._replica(group, next(free)) for _ in range(replicas - len(running))]
            running.extend(added)
            self.on_replicas(group, len(running))
            log.info("scaling %s up to %d replica(s)", group, len(running))
            if self._started:
                for replica in added:
                    replica.start()
            return
        if replicas == len(running):
            return
        # Those not serving yet go first, then the newest: the oldest keep their warm caches.
        order = sorted(running, key=lambda r: (r.state == ReplicaState.READY, -r.index))
        leaving = order[: len(running) - replicas]
        running[:] = [r for r in running if r not in leaving]
        self._publish(group)  # out of routing before anything else
        self.on_replicas(group, len(running))
        log.info("scaling %s down to %d replica(s)", group, len(running))
        draining = self._draining.setdefault(group, [])
        draining.extend(leaving)
        # Cancelled half-way (the server stopping), they stay listed: close() stops them.
        await self._drain(leaving)
        for replica in leaving:
            if replica in draining:
                draining.remove(replica)

    async def _drain(self, replicas: list[_Replica]) -> None:
        """Stop replicas already out of routing once the gateway has nothing in flight at
        them (bounded by the drain timeout; the worker then still finishes what it holds)."""
        deadline = time.monotonic() + self._policy.drain_timeout_s
        await asyncio.sleep(_ROUTED_GRACE_S)
        # Polled: the gateway's counter is a plain integer, with nothing to wait on.
        while time.monotonic() < deadline:
            if not any(self.in_flight(r.upstream) for r in replicas):
                break
            await asyncio.sleep(0.05)
        await self._stop(replicas)

    def _replica(self, group: str, index: int) -> _Replica:
        spec, token = self._deployed[group]

        def publish() -> None:
            self._publish(group)

        return _Replica(
            spec, index, token, self._logs_dir / f"{group}-{index}.log", self._policy, publish
        )

    async def remove(self, group: str) -> None:
        replicas = self._replicas.pop(group, [])
        self._deployed.pop(group, None)
        replicas.extend(self._draining.pop(group, []))
        self._publish(group)
        await self._stop(replicas)
        if replicas:
            self.on_replicas(group, 0)

    def ready(self, group: str) -> tuple[Upstream, ...]:
        return self._ready.get(group, ())

    def status(self, group: str) -> list[ReplicaStatus]:
        return [replica.status() for replica in self._replicas.get(group, [])]

    async def start(self) -> None:
        self._started = True
        for replicas in self._replicas.values():
            for replica in replicas:
                replica.start()

    async def close(self) -> None:
        self._started = False
        groups = list(self._replicas)
        await asyncio.gather(*(self.remove(group) for group in groups))

    async def _stop(self, replicas: list[_Replica]) -> None:
        # Stopping one replica fails on its own; the others still stop.
        results = await asyncio.gather(
            *(r.stop(self._policy.drain_timeout_s) for r in replicas), return_exceptions=True
        )
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, Exception):
                log.error("stopping replica %s failed: %r", replica.name, result)

    def _publish(self, group: str) -> None:
        ready = tuple(
            r.upstream for r in self._replicas.get(group, []) if r.state == ReplicaState.READY
        )
        if ready != self._ready.get(group, ()):
            self._ready[group] = ready
            self.on_change()
